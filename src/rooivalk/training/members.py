"""What the trainings of several members of one model share (a detector ensemble's members, a plan's variants):
progress events tagged with the member, and the saved result that lets a rerun skip a finished member."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rooivalk import storage
from rooivalk.events import MetricsFn, ProgressFn
from rooivalk.models.artifact import VariantMemberInfo, variant_member_path
from rooivalk.models.ensemble_weights import combine, log_loss
from rooivalk.plan import Plan
from rooivalk.training.results import TrainResult

log = logging.getLogger(__name__)

RESULT_FILE = "train_result.json"  # a member's metrics and stages: what a rerun that skips it reports


def member_events(progress: ProgressFn | None, member: int, members: int) -> ProgressFn | None:
    """A member's progress events tagged with `member`, its stage names prefixed so that the CLI's
    progress says which member trains (numbered as its folder and metrics: 0..M-1)."""
    if progress is None:
        return None

    def tagged(event: dict[str, Any]) -> None:
        event = {**event, "member": member}
        if isinstance(event.get("stage"), str):
            event["stage"] = f"member {member} of {members}: {event['stage']}"
        progress(event)

    return tagged


def save_member_result(folder: str, result: TrainResult) -> None:
    record = {"metrics": result.metrics, "stages": result.stages, "artifacts": result.artifacts}
    storage.write_text(f"{folder}/{RESULT_FILE}", json.dumps(record, indent=2))


def finished_member(
    folder: str, lineage: str, dataset_version: str, read_info: Callable[[str], Any]
) -> TrainResult | None:
    """The saved result of a member in `folder` trained for this plan (`lineage`, its model.json's plan
    digest) and dataset, or None; `read_info` reads the member's model.json (its kind's reader)."""
    try:
        info = read_info(folder)
        if info.plan_digest != lineage or info.dataset_version != dataset_version:
            return None
        saved = json.loads(storage.read_bytes(f"{folder}/{RESULT_FILE}"))
    except (FileNotFoundError, ValueError, OSError):
        return None
    return TrainResult(saved["metrics"], saved["stages"], saved["artifacts"])


def member_metrics(log_metrics: MetricsFn | None, member: int) -> MetricsFn | None:
    """Per-epoch figures of member k logged as member_<k>_<name>: members train one after another, each
    from epoch 0, so unprefixed they would interleave in one MLflow series."""
    if log_metrics is None:
        return None

    def prefixed(metrics: dict[str, float], step: int) -> None:
        log_metrics({f"member_{member}_{name}": value for name, value in metrics.items()}, step)

    return prefixed


# (member plan, folder, progress, log_metrics, checkpoint uri) -> its result, the member trained into `folder`
TrainMember = Callable[[Plan, str, ProgressFn | None, MetricsFn | None, str | None], TrainResult]


@dataclass
class TrainedMembers:
    """What a plan's `variants` members left: their records for the root model.json, the run's metrics,
    artifacts (members/<k>/<file> -> sha256) and stage summaries (named by member)."""

    records: list[VariantMemberInfo] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)


def train_variant_members(
    plan: Plan,
    members: list[Plan],
    model_dir: str,
    dataset_version: str,
    train_member: TrainMember,
    read_info: Callable[[str], Any],
    progress: ProgressFn | None,
    log_metrics: MetricsFn | None,
) -> TrainedMembers:
    """Train each member plan into `<model_dir>/members/<k>` (checkpoints under `<uri>/member_<k>`); with
    checkpoint resume, a member already saved for its plan and the dataset is kept, not trained again."""
    assert plan.variants is not None
    count, weights = len(members), plan.variants.normalized_weights()
    uri = plan.training.checkpoint.uri
    resume = plan.training.checkpoint.resume and uri is not None
    out = TrainedMembers()
    for k, member in enumerate(members):
        folder = f"{model_dir}/{variant_member_path(k)}"
        result = finished_member(folder, member.digest(), dataset_version, read_info) if resume else None
        if result is not None:
            log.info("variant member %d of %d: already trained for its plan (%s), kept", k, count, folder)
            if progress is not None:
                progress({"event": "message", "text": f"variant member {k} of {count}: already trained, kept"})
        else:
            checkpoint = None if uri is None else f"{uri.rstrip('/')}/member_{k}"
            result = train_member(
                member, folder, member_events(progress, k, count), member_metrics(log_metrics, k), checkpoint
            )
            save_member_result(folder, result)
        info = read_info(folder)
        out.records.append(
            VariantMemberInfo(
                overrides=plan.variants.members[k],
                weight=weights[k],
                architecture=info.spec.architecture,
                plan_digest=info.plan_digest,
                weights_sha256=info.weights_sha256 or "",
            )
        )
        out.metrics |= {f"member_{k}_{key}": value for key, value in result.metrics.items()}
        out.artifacts |= {f"{variant_member_path(k)}/{name}": sha for name, sha in result.artifacts.items()}
        out.stages += [{**stage, "stage": f"member {k}: {stage['stage']}"} for stage in result.stages]
    return out


def ensemble_metrics(trained: TrainedMembers, ensemble: dict[str, float], weights: list[float]) -> dict[str, float]:
    """The run's metrics: the members', the ensemble's on the validation split (its accuracy is the run's best)."""
    count = len(weights)
    metrics = trained.metrics | ensemble | {f"ensemble_weight_{k}": weight for k, weight in enumerate(weights)}
    return metrics | {
        "best_val_accuracy": ensemble.get("ensemble_val_accuracy", float("nan")),
        "train_seconds": sum(metrics.get(f"member_{k}_train_seconds", 0.0) for k in range(count)),
        "num_stages": float(len(trained.stages)),
        "variant_members": float(count),
    }


def ensemble_val_figures(probabilities: dict[str, Any], weights: dict[str, float], labels: Any) -> dict[str, float]:
    """Accuracy and log loss of the weighted average of members' probabilities {member: (n, K)} on the
    validation split's labels (n,); nothing when the split is empty."""
    if len(labels) == 0:
        return {}
    mixed = combine(probabilities, weights)
    return {
        "ensemble_val_accuracy": float((mixed.argmax(1) == np.asarray(labels)).mean()),
        "ensemble_val_log_loss": log_loss(mixed, np.asarray(labels)),
    }
