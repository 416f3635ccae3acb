"""The multi-sensor pipeline's attribution steps: the plan's `attribution` model, end to end.

The attribution model learns from its own table (RF link, track kinematics, time of day, ...), not
from the events the sensor models share, so it neither waits for nor feeds them. `train_attribution`
runs its table plan (Plan.attribution_plan) through the very library calls of the single-model
pipeline (ingest, train, evaluate against its gates, export), writing each stage's folder under the
step's output:
    dataset/  model/  evaluation/  export/ (bundles/model is the deployment bundle)  quarantine.json
and `register_attribution` registers it as `<registered name>-attribution`: a step apart, because a
training step may be retried after a lost pod and a registration must not be (rooivalk.plan.cluster).
Every metric is reported with an `attribution_` prefix beside the sensors' and the fusion model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rooivalk.events import MetricsFn, ProgressFn
from rooivalk.plan import Plan

# What the step logs of its folders (paths under its output).
LOGGED_FILES = (
    "dataset/dataset.json",
    "dataset/dataset_card.json",
    "dataset/dataset_card.md",
    "quarantine.json",
    "evaluation/evaluation.json",
    "export/export_report.json",
)


FOLDERS = ("dataset", "model", "evaluation", "export")


@dataclass
class AttributionResult:
    metrics: dict[str, float]
    bundle: str  # the deployment bundle's folder or URI
    dataset_version: str
    gates: list[dict[str, Any]] = field(default_factory=list)  # evaluation and export gates


def _prefixed(metrics: dict[str, float]) -> dict[str, float]:
    return {f"attribution_{name}": value for name, value in metrics.items()}


def train_attribution(
    plan: Plan,
    out_dir: str,
    progress: ProgressFn | None = None,
    log_metrics: MetricsFn | None = None,
) -> AttributionResult:
    """Ingest, train, evaluate and export the plan's attribution model under `out_dir`."""
    from rooivalk.data import ingest_data
    from rooivalk.evaluation import evaluate_model
    from rooivalk.export import export_model
    from rooivalk.steps.system_steps import step_checkpoint_uri
    from rooivalk.training import train_model

    table_plan = plan.attribution_plan()
    if table_plan.training.checkpoint.uri is None:  # as the sensor steps: a retried pod resumes from there
        checkpoint = table_plan.training.checkpoint.model_copy(update={"uri": step_checkpoint_uri(out_dir)})
        training = table_plan.training.model_copy(update={"checkpoint": checkpoint})
        table_plan = table_plan.model_copy(update={"training": training})
    say = progress or (lambda _event: None)
    folders = {name: f"{out_dir}/{name}" for name in FOLDERS}
    ingested = ingest_data(table_plan.data, folders["dataset"], quarantine_uri=f"{out_dir}/quarantine.json")
    say({"event": "message", "text": f"attribution data {ingested.info.version_id}: {ingested.metrics}"})
    try:
        trained = train_model(table_plan, folders["dataset"], folders["model"], progress, log_metrics)
    except ValueError as error:  # a refusal naming a key of the table plan names it where the user set it
        raise ValueError(_under_attribution(str(error))) from error
    evaluated = evaluate_model(table_plan, folders["model"], folders["dataset"], folders["evaluation"])
    exported = export_model(
        table_plan,
        folders["model"],
        folders["dataset"],
        folders["export"],
        progress=lambda text: say({"event": "message", "text": text}),
    )
    metrics = {**ingested.metrics, **trained.metrics, **evaluated.metrics, **exported.metrics}
    return AttributionResult(
        metrics=_prefixed(metrics),
        bundle=exported.bundles["model"],
        dataset_version=ingested.info.version_id,
        gates=[*evaluated.gates, *exported.gates],
    )


# The table plan's sections that come from the plan's attribution section (Plan.attribution_plan).
_ATTRIBUTION_SECTIONS = ("data.", "model.", "training.", "ensemble.", "evaluation.", "export.")


def _under_attribution(message: str) -> str:
    """A training error that names a key of the attribution's table plan (`training.distillation.teacher:
    ...`), with the key as the user wrote it in the plan (`attribution.training.distillation.teacher`)."""
    return f"attribution.{message}" if message.startswith(_ATTRIBUTION_SECTIONS) else message


def register_attribution(
    plan: Plan, out_dir: str, dataset_version: str, tracking_uri: str, run_id: str, parent_run_id: str
) -> tuple[str, dict[str, float]]:
    """Register the model `train_attribution` wrote under `out_dir`; ("<name>/<version>", metrics)."""
    from rooivalk.steps.registration import register

    registration = register(
        tracking_uri,
        plan.attribution_plan().to_parameter(),
        run_id,
        parent_run_id,
        f"{out_dir}/model",
        dataset_version,
        {"evaluation": f"{out_dir}/evaluation", "onnx": f"{out_dir}/export"},
        dataset_dir=f"{out_dir}/dataset",
        own_steps=["train_attribution", "register_attribution"],  # not the sensors' and fusion's steps
    )
    return registration.ref, _prefixed(registration.step_metrics())
