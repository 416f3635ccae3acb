"""KFP adapter for rooivalk.steps.system_steps.train_sensor_step (one task per sensor)."""

from kfp import dsl

from rooivalk_kfp.components.images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train_sensor(
    plan: dict,
    run_key: str,
    job_id: str,
    sensor: str,
    dataset: dsl.Input[dsl.Dataset],
    model: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
):
    """Train one sensor's model (from scratch or fine-tuned, as its plan says) on its own samples.
    The parent MLflow run is found by run key, not passed in: see tracking.pipeline_run_id."""
    from rooivalk.steps import pipeline_step
    from rooivalk.steps.system_steps import train_sensor_step as run
    from rooivalk.tracking import pipeline_run_id

    parent_run_id = pipeline_run_id(plan, run_key or job_id)
    with pipeline_step(f"train_sensor_{sensor}", plan, parent_run_id) as step:
        result = run(step.plan, sensor, dataset.path, model.path, step.progress, step.log_metrics)
        values = {"val_accuracy": result.val_accuracy, "train_seconds": result.seconds}
        step.record(values, {"model": model.path}, log_files=[f"{model.path}/sensor.json"], stages=result.stages)
    model.metadata["sensor"] = sensor
    for name, value in values.items():
        metrics.log_metric(name, value)
