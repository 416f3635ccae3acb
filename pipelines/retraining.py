"""The retraining pipeline: new data -> prepare (the plan pointed at the new dataset folder, optionally
warm-started from the champion) -> the plan's training pipeline, whose steps ingest a new dataset
version, train the challenger, evaluate it, export it, and register it: promotion compares it with the
champion re-scored on the same test set, and a promoted challenger's reference profile replaces the
monitoring reference (`monitoring.reference_uri`).

Argo Events starts it with the new object's URI (`rooivalk submit PLAN --pipeline retraining --param
data_uri=s3://bucket/dataset/_READY`); a drift alert or the cron schedule starts it without one.
"""

from collections.abc import Callable
from typing import Any

from kfp import dsl

from rooivalk.plan import Plan
from rooivalk_kfp.components.prepare_retraining import prepare_retraining
from rooivalk_kfp.pipelines.kubernetes import configure_tasks

PIPELINE_NAME = "rooivalk-retraining"


def retraining_pipeline(plan: Plan, parallelism: int = 0, on_cluster: bool = True) -> Callable[..., Any]:
    """The retraining pipeline around the plan's training pipeline (training or multi-sensor);
    `parallelism` and `on_cluster` as in pipelines.select.pipeline_for."""
    from rooivalk_kfp.pipelines.select import pipeline_for

    cluster = plan.cluster if on_cluster else None
    # New sensor data retrains the sensor branch; the attribution model learns from its own table, which
    # the retraining trigger does not bring, so its steps stay out (it would retrain on unchanged data).
    training = pipeline_for(plan.model_copy(update={"attribution": None}), parallelism, on_cluster)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=f"New data -> {training.name} (challenger vs champion on the same test set, promotion, "
        "export, monitoring reference refresh).",
    )
    def pipeline(plan: dict, data_uri: str = "", run_key: str = ""):
        prepared = prepare_retraining(plan=plan, data_uri=data_uri)
        prepared.set_caching_options(False)  # the champion and the data behind the URI change between runs
        retrain = training.function(plan=prepared.outputs["plan"], run_key=run_key)
        retrain.set_caching_options(False)
        configure_tasks(cluster, [prepared])  # the nested pipeline's tasks got theirs when it was built

    return pipeline
