"""`rooivalk compile`: the plan's pipeline (training or multi-sensor) as KFP IR YAML, the plan its default parameter."""

from __future__ import annotations

from pathlib import Path

from rooivalk.plan import Plan


def compile_plan(plan: Plan, output: Path, tracking_uri: str) -> Path:
    from kfp import compiler

    from pipelines.select import pipeline_for

    if not plan.tracking.uri:
        plan = plan.model_copy(update={"tracking": plan.tracking.model_copy(update={"uri": tracking_uri})})
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(
        pipeline_for(plan).function, str(output), pipeline_parameters={"plan": plan.to_parameter()}
    )
    return output
