"""KFP adapter for rooivalk.steps.search_steps.search_report (after every worker of a plan's search)."""

from kfp import dsl

from rooivalk_kfp.components.images import EVAL_IMAGE


@dsl.component(base_image=EVAL_IMAGE, install_kfp_package=False)
def search_report(plan: dict, parent_run_id: str, report: dsl.Output[dsl.Artifact]):
    """search.json, best_plan.yaml (the plan to run) and search.png of the study, logged to MLflow."""
    from rooivalk.steps import pipeline_step
    from rooivalk.steps.search_steps import search_report as run

    with pipeline_step("search_report", plan, parent_run_id) as step:
        result = run(plan, step.run_id, report.path)
        step.record({f"trials_{state}": float(n) for state, n in result.counts().items()}, {"report": report.path})
