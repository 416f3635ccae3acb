"""KFP adapter for rooivalk.steps.system_steps.cache_features."""

from kfp import dsl

from rooivalk_kfp.components.images import FEATURES_IMAGE


@dsl.component(base_image=FEATURES_IMAGE, install_kfp_package=False)
def cache_features(
    plan: dict,
    parent_run_id: str,
    dataset: dsl.Input[dsl.Dataset],
    models: dsl.Input[list[dsl.Model]],
    features: dsl.Output[dsl.Dataset],
    metrics: dsl.Output[dsl.Metrics],
) -> str:
    """Every frozen sensor encoder over every event through the content-addressed feature cache.
    Returns the features' content key, which downstream tasks take as a parameter so KFP's cache key
    follows data content."""
    from rooivalk.steps import pipeline_step
    from rooivalk.steps.system_steps import cache_features as run

    with pipeline_step("cache_features", plan, parent_run_id) as step:
        cached, info = run(step.plan, dataset.path, [m.path for m in models], features.path)
        values = {"encoder_forward_passes": float(cached.forward_passes), "cache_hits": float(cached.hits)}
        step.record(values, {"features": features.path}, features_key=info.key, cache=info.cache)
    features.metadata["features_key"] = info.key
    for name, value in values.items():
        metrics.log_metric(name, value)
    return info.key
