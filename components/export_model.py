"""KFP adapter for rooivalk.export.export_model."""

from kfp import dsl

from rooivalk_kfp.components.images import EXPORT_IMAGE


@dsl.component(base_image=EXPORT_IMAGE, install_kfp_package=False)
def export_model(
    plan: dict,
    parent_run_id: str,
    dataset: dsl.Input[dsl.Dataset],
    model: dsl.Input[dsl.Model],
    exported: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
):
    """ONNX FP32 + INT8 export, verified against PyTorch, with accuracy, size and latency."""
    from rooivalk.export import export_model as run
    from rooivalk.steps import pipeline_step

    with pipeline_step("export_model", plan, parent_run_id) as step:
        result = run(
            step.plan,
            model_dir=model.path,
            dataset_dir=dataset.path,
            export_dir=exported.path,
            progress=lambda message: step.progress({"event": "message", "text": message}),
        )
        step.record(
            result.metrics,
            {"exported": exported.path, **result.artifacts},
            log_files=[exported.path],
            gates=result.gates,
        )
        step.log_onnx_bundles(result.bundles)
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
