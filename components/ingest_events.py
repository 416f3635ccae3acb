"""KFP adapter for rooivalk.data.ingest_multisensor.ingest_events."""

from kfp import dsl

from rooivalk_kfp.components.images import DATA_IMAGE


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def ingest_events(
    plan: dict,
    parent_run_id: str,
    dataset: dsl.Output[dsl.Dataset],
    quarantine: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
) -> str:
    """Simulate the source when the plan asks and it is absent; validate, mask, quarantine, split and
    version the events; returns the dataset version id."""
    from rooivalk.data.ingest_multisensor import ingest_events as run
    from rooivalk.steps import pipeline_step
    from rooivalk.steps.ingest_step import record_ingest

    with pipeline_step("ingest_events", plan, parent_run_id) as step:
        result = run(step.plan, dataset.path, quarantine_uri=quarantine.path, progress=step.progress)
        version = result.info.version_id
        record_ingest(step, result.metrics, version, dataset.path, quarantine.path, missing=result.missing)
    dataset.metadata["version_id"] = result.info.version_id
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    return result.info.version_id
