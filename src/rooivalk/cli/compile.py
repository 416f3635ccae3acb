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
    if plan.pipeline_root:  # the IR's defaultPipelineRoot: where the cluster's KFP stores artifacts
        import yaml

        documents = list(yaml.safe_load_all(output.read_text()))  # pipeline spec [+ platform spec]
        documents[0]["defaultPipelineRoot"] = plan.pipeline_root
        output.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return output
