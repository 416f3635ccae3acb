"""KFP adapter for rooivalk.tracking.register_system."""

from kfp import dsl

from components.images import TRACKING_IMAGE


@dsl.component(base_image=TRACKING_IMAGE, install_kfp_package=False)
def register_system(
    plan: dict,
    parent_run_id: str,
    dataset_version: str,
    models: dsl.Input[list[dsl.Model]],
    fusion: dsl.Input[dsl.Model],
    report: dsl.Input[dsl.Artifact],
    exported: dsl.Input[dsl.Model],
) -> str:
    """Register the validated fusion model, with its sensor models and ONNX export as artifacts."""
    from rooivalk.steps import pipeline_step
    from rooivalk.tracking import register_system as run

    with pipeline_step("register_system", plan, parent_run_id) as step:
        artifacts = {"evaluation": report.path, "onnx": exported.path}
        sensor_dirs = [m.path for m in models]
        name, version, decision = run(
            step.plan, step.run_id, parent_run_id, fusion.path, sensor_dirs, dataset_version, artifacts
        )
        step.record(
            # version is "buffered" while the tracking server is unreachable (rooivalk sync registers it)
            {"registered_version": float(version), **decision.as_metrics()} if version.isdigit() else {},
            {},
            registered_model=f"{name}/{version}",
            promotion=decision.reason,
        )
    return f"{name}/{version}"
