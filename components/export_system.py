"""KFP adapter for rooivalk.export.system.export_system_step."""

from kfp import dsl

from rooivalk_kfp.components.images import EXPORT_IMAGE


@dsl.component(base_image=EXPORT_IMAGE, install_kfp_package=False)
def export_system(
    plan: dict,
    parent_run_id: str,
    dataset: dsl.Input[dsl.Dataset],
    models: dsl.Input[list[dsl.Model]],
    fusion: dsl.Input[dsl.Model],
    exported: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
):
    """ONNX encoders + fusion, FP32 verified against PyTorch, INT8 where the export gates allow."""
    from rooivalk.export.system import export_system_step as run
    from rooivalk.steps import pipeline_step

    with pipeline_step("export_system", plan, parent_run_id) as step:
        result = run(
            step.plan,
            dataset.path,
            [m.path for m in models],
            fusion.path,
            exported.path,
            progress=lambda message: step.progress({"event": "message", "text": message}),
        )
        step.record(result.metrics, {"exported": exported.path}, log_files=[exported.path], gates=result.gates)
        step.log_onnx_bundles(result.bundles)
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
