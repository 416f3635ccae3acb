"""`rooivalk compile`: a plan's pipeline as KFP IR YAML, the plan its default parameter: the plan's
training pipeline (training or multi-sensor), the retraining pipeline around it (new data, optional warm
start, monitoring reference refresh), or the drift check that starts training on drift."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rooivalk.plan import Plan, PlanError

PIPELINES = ("training", "retraining", "drift-check")


def _pipeline_function(plan: Plan, pipeline: str) -> Callable[..., Any]:
    # The KFP layer is untyped (mypy checks src/ only), so each result is typed on assignment.
    function: Callable[..., Any]
    if plan.search is not None and pipeline != "training":
        raise PlanError(f"search: a search plan compiles to its search pipeline (training), not {pipeline}")
    if pipeline == "training":
        from rooivalk_kfp.pipelines.select import pipeline_for

        function = pipeline_for(plan).function
        return function
    if pipeline == "retraining":
        from rooivalk_kfp.pipelines.retraining import retraining_pipeline

        function = retraining_pipeline(plan)
        return function
    if pipeline == "drift-check":
        from rooivalk_kfp.pipelines.drift_check import drift_check_pipeline

        function = drift_check_pipeline(plan)
        return function
    raise ValueError(f"unknown pipeline {pipeline!r} (one of {', '.join(PIPELINES)})")


def with_tracking_default(plan: Plan, tracking_uri: str) -> Plan:
    """The plan with `tracking_uri` as its MLflow URI when it names none (the pods' in-cluster server)."""
    if plan.tracking.uri:
        return plan
    return plan.model_copy(update={"tracking": plan.tracking.model_copy(update={"uri": tracking_uri})})


def compile_plan(plan: Plan, output: Path, tracking_uri: str, pipeline: str = "training") -> Path:
    from kfp import compiler

    plan = with_tracking_default(plan, tracking_uri)
    function = _pipeline_function(plan, pipeline)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(function, str(output), pipeline_parameters={"plan": plan.to_parameter()})
    if plan.pipeline_root:  # the IR's defaultPipelineRoot: where the cluster's KFP stores artifacts
        import yaml

        documents = list(yaml.safe_load_all(output.read_text()))  # pipeline spec [+ platform spec]
        documents[0]["defaultPipelineRoot"] = plan.pipeline_root
        output.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return output
