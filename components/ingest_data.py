"""KFP adapter for rooivalk.data.ingest_data."""

from kfp import dsl

from rooivalk_kfp.components.images import DATA_IMAGE


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def ingest_data(
    plan: dict,
    parent_run_id: str,
    dataset: dsl.Output[dsl.Dataset],
    quarantine: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
) -> str:
    """Validate, quarantine and version the plan's data source; returns the dataset version id."""
    # KFP ships only this function's source, so imports live in the body.
    from rooivalk.data import ingest_data as run
    from rooivalk.steps import pipeline_step
    from rooivalk.steps.ingest_step import record_ingest

    with pipeline_step("ingest_data", plan, parent_run_id) as step:
        result = run(step.plan.data, dataset.path, quarantine_uri=quarantine.path)
        record_ingest(step, result.metrics, result.info.version_id, dataset.path, quarantine.path)
    dataset.metadata["version_id"] = result.info.version_id
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    return result.info.version_id
