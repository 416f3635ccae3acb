"""KFP adapters that open and close the pipeline's parent MLflow run."""

from kfp import dsl

from rooivalk_kfp.components.images import TRACKING_IMAGE


@dsl.component(base_image=TRACKING_IMAGE, install_kfp_package=False)
def open_run(plan: dict, pipeline: str, run_key: str, job_id: str) -> str:
    """Create the parent MLflow run for this pipeline run; returns its run id."""
    from rooivalk.plan import Plan
    from rooivalk.tracking import open_pipeline_run

    return open_pipeline_run(Plan.model_validate(plan), run_key or job_id, pipeline)


@dsl.component(base_image=TRACKING_IMAGE, install_kfp_package=False)
def close_run(plan: dict, run_key: str, job_id: str, expected_steps: list) -> str:
    """Exit handler: FINISHED when every step's nested run finished, else FAILED."""
    from rooivalk.plan import Plan
    from rooivalk.tracking import close_pipeline_run_by_key

    return close_pipeline_run_by_key(Plan.model_validate(plan), run_key or job_id, [str(s) for s in expected_steps])
