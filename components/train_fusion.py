"""KFP adapter for rooivalk.steps.system_steps.train_fusion_step."""

from kfp import dsl

from rooivalk_kfp.components.images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train_fusion(
    plan: dict,
    parent_run_id: str,
    features_key: str,
    dataset: dsl.Input[dsl.Dataset],
    features: dsl.Input[dsl.Dataset],
    model: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
):
    """Train the cross-modal fusion transformer (modality dropout) on the cached embeddings.
    `features_key` is the features' content key: part of this task's KFP cache key."""
    from rooivalk.steps import pipeline_step
    from rooivalk.steps.system_steps import train_fusion_step as run

    with pipeline_step("train_fusion", plan, parent_run_id) as step:
        result = run(step.plan, dataset.path, features.path, model.path, features_key, step.progress, step.log_metrics)
        values = {"val_accuracy": result.fit.best_val_accuracy, "train_seconds": result.fit.seconds}
        step.record(values, {"model": model.path}, log_files=[f"{model.path}/fusion.json"], stages=result.fit.stages)
    for name, value in values.items():
        metrics.log_metric(name, value)
