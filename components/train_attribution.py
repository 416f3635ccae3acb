"""KFP adapter for rooivalk.steps.attribution_step.train_attribution (multi-sensor plans with `attribution`)."""

from kfp import dsl

from rooivalk_kfp.components.images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train_attribution(
    plan: dict,
    parent_run_id: str,
    attribution: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
) -> str:
    """Ingest, train, evaluate and export the threat-attribution model; returns its dataset version."""
    from rooivalk.steps import pipeline_step
    from rooivalk.steps.attribution_step import LOGGED_FILES
    from rooivalk.steps.attribution_step import train_attribution as run

    with pipeline_step("train_attribution", plan, parent_run_id) as step:
        result = run(step.plan, attribution.path, progress=step.progress, log_metrics=step.log_metrics)
        step.record(
            result.metrics,
            {"attribution": attribution.path},
            log_files=[f"{attribution.path}/{name}" for name in LOGGED_FILES],
            gates=result.gates,
            attribution_dataset_version=result.dataset_version,  # not dataset_version: the run's is the events'
        )
        step.log_onnx_bundles({"attribution": result.bundle})
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    return result.dataset_version
