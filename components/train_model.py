"""KFP adapter for rooivalk.training.train_model."""

from kfp import dsl

from rooivalk_kfp.components.images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train_model(
    plan: dict,
    parent_run_id: str,
    dataset: dsl.Input[dsl.Dataset],
    model: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
):
    """Train or fine-tune the plan's model on the dataset, stage by stage."""
    from rooivalk.steps import pipeline_step
    from rooivalk.training import train_model as run

    with pipeline_step("train_model", plan, parent_run_id) as step:
        result = run(
            step.plan,
            dataset_dir=dataset.path,
            model_dir=model.path,
            progress=step.progress,
            log_metrics=step.log_metrics,
        )
        step.record(
            result.metrics,
            {"model": model.path},
            log_files=[f"{model.path}/{name}" for name in ("model.pt", "model.json", "stages.json")],
            stages=result.stages,
            resumed_from=result.resumed_from,
        )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
