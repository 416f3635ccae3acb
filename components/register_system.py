"""KFP adapter for rooivalk.steps.registration.register (a fusion system and its sensor models)."""

from kfp import dsl

from rooivalk_kfp.components.images import TRACKING_IMAGE


@dsl.component(base_image=TRACKING_IMAGE, install_kfp_package=False)
def register_system(
    plan: dict,
    parent_run_id: str,
    dataset_version: str,
    dataset: dsl.Input[dsl.Dataset],
    models: dsl.Input[list[dsl.Model]],
    fusion: dsl.Input[dsl.Model],
    report: dsl.Input[dsl.Artifact],
    exported: dsl.Input[dsl.Model],
) -> str:
    """Register the validated fusion model, with its sensor models and ONNX export as artifacts."""
    from rooivalk.steps import pipeline_step
    from rooivalk.steps.registration import register
    from rooivalk.steps.retraining import refresh_reference

    with pipeline_step("register_system", plan, parent_run_id) as step:
        artifacts = {"evaluation": report.path, "onnx": exported.path}
        sensor_dirs = [m.path for m in models]
        registered = register(
            step.tracking_uri,
            plan,
            step.run_id,
            parent_run_id,
            fusion.path,
            dataset_version,
            artifacts,
            sensor_dirs,
            dataset.path,
        )
        # The drift monitor compares production data with what the serving (champion) model was validated on.
        reference = refresh_reference(step.plan, report.path, registered.decision.promoted)
        step.record(
            registered.step_metrics(),
            {},
            registered_model=registered.ref,
            promotion=registered.decision.reason,
            monitoring_reference=reference or "unchanged",
        )
    return registered.ref
