"""KFP adapter for rooivalk.steps.registration.register (one trained model)."""

from kfp import dsl

from rooivalk_kfp.components.images import TRACKING_IMAGE


@dsl.component(base_image=TRACKING_IMAGE, install_kfp_package=False)
def register_model(
    plan: dict,
    parent_run_id: str,
    dataset_version: str,
    dataset: dsl.Input[dsl.Dataset],
    model: dsl.Input[dsl.Model],
    report: dsl.Input[dsl.Artifact],
    exported: dsl.Input[dsl.Model],
) -> str:
    """Register the validated model in the MLflow registry with lineage tags; returns name/version."""
    from rooivalk.steps import pipeline_step
    from rooivalk.steps.registration import register
    from rooivalk.steps.retraining import refresh_reference

    with pipeline_step("register_model", plan, parent_run_id) as step:
        artifacts = {"evaluation": report.path, "onnx": exported.path}
        registered = register(
            step.tracking_uri,
            plan,
            step.run_id,
            parent_run_id,
            model.path,
            dataset_version,
            artifacts,
            dataset_dir=dataset.path,
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
