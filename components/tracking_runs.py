"""KFP adapters that open and close the pipeline's parent MLflow run."""

from kfp import dsl

from components.images import TRACKING_IMAGE


@dsl.component(base_image=TRACKING_IMAGE, install_kfp_package=False)
def open_run(plan: dict, pipeline: str, run_key: str, job_id: str) -> str:
    """Create the parent MLflow run for this pipeline run; returns its run id."""
    from rooivalk.plan import Plan
    from rooivalk.tracking import open_pipeline_run

    return open_pipeline_run(Plan.model_validate(plan), plan["tracking"]["uri"], run_key or job_id, pipeline)


@dsl.component(base_image=TRACKING_IMAGE, install_kfp_package=False)
def close_run(plan: dict, run_key: str, job_id: str, expected_steps: list) -> str:
    """Exit handler: FINISHED when every step's nested run finished, else FAILED.

    An exit task may not depend on other tasks, so it finds the parent run by its run key.
    """
    from rooivalk.tracking import close_pipeline_run, find_pipeline_run

    uri = plan["tracking"]["uri"]
    parent_run_id = find_pipeline_run(uri, plan["tracking"]["experiment"], run_key or job_id)
    if parent_run_id is None:
        return "NOT_STARTED"
    return close_pipeline_run(uri, parent_run_id, [str(s) for s in expected_steps])
