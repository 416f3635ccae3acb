"""KFP adapter for rooivalk.steps.attribution_step.register_attribution."""

from kfp import dsl

from rooivalk_kfp.components.images import TRACKING_IMAGE


@dsl.component(base_image=TRACKING_IMAGE, install_kfp_package=False)
def register_attribution(
    plan: dict,
    parent_run_id: str,
    dataset_version: str,
    attribution: dsl.Input[dsl.Model],
) -> str:
    """Register the threat-attribution model as <registered name>-attribution; returns name/version."""
    from rooivalk.steps import pipeline_step
    from rooivalk.steps.attribution_step import register_attribution as run

    with pipeline_step("register_attribution", plan, parent_run_id) as step:
        registered, metrics = run(
            step.plan, attribution.path, dataset_version, step.tracking_uri, step.run_id, parent_run_id
        )
        step.record(metrics, {}, registered_model=registered)
    return registered
