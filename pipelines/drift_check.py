"""The drift-check pipeline: monitor_drift on a batch of production data and, when it flags drift,
the plan's training pipeline (training, or multi-sensor for plans with `sensors`) as a nested task.

Which training pipeline runs depends on the plan, so the pipeline is built from it
(`drift_check_pipeline(plan)`), as `rooivalk compile PLAN --pipeline drift-check` does.
"""

from collections.abc import Callable
from typing import Any

from kfp import dsl

from rooivalk.plan import Plan
from rooivalk_kfp.components.monitor_drift import monitor_drift
from rooivalk_kfp.pipelines.kubernetes import configure_tasks

PIPELINE_NAME = "rooivalk-drift-check"


def drift_check_pipeline(plan: Plan) -> Callable[..., Any]:
    """The drift check with the plan's training pipeline in its retraining branch."""
    from rooivalk_kfp.pipelines.select import pipeline_for

    plan_spec = plan  # the pipeline's own `plan` parameter shadows it below
    training = pipeline_for(plan)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=f"Batch drift check against the reference profile; on drift, retrain with {training.name}.",
    )
    def pipeline(plan: dict, current_uri: str, reference_uri: str = "", run_key: str = ""):
        # KFP's cache key ignores data content (new data under the same URIs would hit it): off, as in
        # the training pipelines.
        check = monitor_drift(plan=plan, reference_uri=reference_uri, current_uri=current_uri)
        check.set_caching_options(False)
        with dsl.If(check.outputs["retrain"] == True, name="drift-detected"):  # noqa: E712 (a KFP condition)
            retrain = training.function(plan=plan, run_key=run_key)
            retrain.set_caching_options(False)
        configure_tasks(plan_spec.cluster, [check])  # the nested pipeline's tasks got theirs when it was built

    return pipeline
