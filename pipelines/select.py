"""Which pipeline runs a plan: the multi-sensor pipeline for plans with `sensors`, else training."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rooivalk.plan import Plan


@dataclass(frozen=True)
class PipelineChoice:
    name: str
    function: Callable[..., Any]
    steps: list[str]


def pipeline_for(plan: Plan, parallelism: int = 0, on_cluster: bool = True) -> PipelineChoice:
    """`parallelism`: concurrent sensor tasks of a multi-sensor pipeline (0: unlimited); `on_cluster`:
    apply the plan's `cluster` settings (local runs leave them out: kfp.local has no pods)."""
    cluster = plan.cluster if on_cluster else None
    if plan.search is not None:
        from rooivalk.search.runner import search_settings
        from rooivalk.steps.search_steps import cluster_storage
        from rooivalk_kfp.pipelines.search import PIPELINE_NAME as SEARCH
        from rooivalk_kfp.pipelines.search import STEPS as SEARCH_STEPS
        from rooivalk_kfp.pipelines.search import build_search_pipeline

        cluster_storage(plan.search)  # refused here, at compile time, rather than in every worker pod
        workers = search_settings(plan.search).workers  # no more pods than trials (or grid points)
        return PipelineChoice(SEARCH, build_search_pipeline(workers, cluster), SEARCH_STEPS)
    if plan.sensors:
        from rooivalk_kfp.pipelines.multisensor import PIPELINE_NAME, multisensor_pipeline, multisensor_steps

        sensors = list(plan.sensors)
        attribution = plan.attribution is not None
        function = multisensor_pipeline(sensors, parallelism, cluster, attribution)
        return PipelineChoice(PIPELINE_NAME, function, multisensor_steps(sensors, attribution))
    from rooivalk_kfp.pipelines.training import PIPELINE_NAME as TRAINING
    from rooivalk_kfp.pipelines.training import STEPS, build_training_pipeline

    return PipelineChoice(TRAINING, build_training_pipeline(cluster), STEPS)
