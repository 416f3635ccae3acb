"""KFP adapter for rooivalk.tracking.register_model."""

from kfp import dsl

from components.images import TRACKING_IMAGE


@dsl.component(base_image=TRACKING_IMAGE, install_kfp_package=False)
def register_model(
    plan: dict,
    parent_run_id: str,
    dataset_version: str,
    model: dsl.Input[dsl.Model],
    report: dsl.Input[dsl.Artifact],
    exported: dsl.Input[dsl.Model],
) -> str:
    """Register the validated model in the MLflow registry with lineage tags; returns name/version."""
    from rooivalk.models import load_trained_model
    from rooivalk.steps import pipeline_step
    from rooivalk.tracking import lineage_tags
    from rooivalk.tracking import register_model as run

    with pipeline_step("register_model", plan, parent_run_id) as step:
        network, _ = load_trained_model(model.path)
        name = step.plan.tracking.registered_model or step.plan.name
        tags = {
            **lineage_tags(step.plan, dataset_version),
            "rooivalk.status": "validated",
            "rooivalk.parent_run_id": parent_run_id,
        }
        name, version = run(
            step.tracking_uri,
            step.run_id,
            network,
            name,
            tags,
            alias="candidate",
            extra_artifacts={"evaluation": report.path, "onnx": exported.path},
        )
        step.record({"registered_version": float(version)}, {}, registered_model=f"{name}/{version}")
    return f"{name}/{version}"
