"""KFP adapter for rooivalk.retraining.prepare_retraining."""

from typing import NamedTuple

from kfp import dsl

from components.images import TRACKING_IMAGE


@dsl.component(base_image=TRACKING_IMAGE, install_kfp_package=False)
def prepare_retraining(plan: dict, data_uri: str, champion: dsl.Output[dsl.Model]) -> NamedTuple(
    "Prepared", plan=dict, summary=str
):
    """Point the plan at the new data (a dataset folder or its _READY marker; empty: the plan's source)
    and, with retraining.warm_start, at the registry champion's weights."""
    from collections import namedtuple

    from rooivalk import tracking
    from rooivalk.plan import Plan
    from rooivalk.retraining import download_champion
    from rooivalk.retraining import prepare_retraining as run

    loaded = Plan.model_validate(plan)
    champion_dir = None
    if loaded.retraining.warm_start:
        champion_dir = download_champion(tracking.required_uri(loaded), loaded, champion.path)
    prepared = run(loaded, data_uri, champion_dir, champion.uri)  # the train step reads the uri
    print(f"retraining: {prepared.summary()}")
    return namedtuple("Prepared", ["plan", "summary"])(prepared.plan.to_parameter(), prepared.summary())
