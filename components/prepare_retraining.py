"""KFP adapter for rooivalk.steps.retraining.prepare_retraining."""

from typing import NamedTuple

from kfp import dsl

from rooivalk_kfp.components.images import TRACKING_IMAGE


@dsl.component(base_image=TRACKING_IMAGE, install_kfp_package=False)
def prepare_retraining(plan: dict, data_uri: str, champion: dsl.Output[dsl.Model]) -> NamedTuple(
    "Prepared", plan=dict, summary=str
):
    """Point the plan at the new data (a dataset folder or its _READY marker; empty: the plan's source)
    and, with retraining.warm_start, at the registry champion's weights."""
    from collections import namedtuple

    from rooivalk.plan import Plan
    from rooivalk.steps.retraining import prepare_retraining_step

    # The train step reads the champion's weights at the output's uri (S3 on clusters).
    prepared = prepare_retraining_step(Plan.model_validate(plan), data_uri, champion.path, champion.uri)
    print(f"retraining: {prepared.summary()}")
    return namedtuple("Prepared", ["plan", "summary"])(prepared.plan.to_parameter(), prepared.summary())
