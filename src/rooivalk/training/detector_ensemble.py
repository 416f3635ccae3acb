"""Training a `model.detector.ensemble`: the plan's detector trained once per member, through the engine.

Member k trains as a plan of its own (rooivalk.plan.detector_members): seed training.seed + k (its
head's initial weights, batches and augmentation) unless its overrides set training.seed,
training.budget_seconds / M, then its `overrides` (training keys: augmentation strengths, learning rates,
epochs) and its own score / NMS / max_detections post-process (validation mAP is scored with it), in its
own checkpoint folder (member 0 keeps the plan's). Members 1..M-1 train first into
`model_dir`/members/k (each a detector of its own, model.json without an ensemble), then member 0 into
`model_dir`, whose model.json, written last, records the members' weight digests and, in its spec's
ensemble, every member's overrides: it marks the whole ensemble complete, and a member left by another
run is refused when loading (rooivalk.models.detector_artifact.load_detector_members). The root's
model.json of an earlier run is removed first, so a crash never leaves an old root over new members.

A rerun with checkpoint resume on (a retried pod, `rooivalk run` again) skips each member already
saved for its own plan and the dataset (its model.json's plan digest, that of the member's plan, and
dataset version, and its train_result.json), and resumes the one that was cut off from its checkpoints:
a member whose override changed trains again, the others are kept (member 0, the root, always goes
through the engine, resuming from its checkpoints). The root's model.json records the whole plan's
digest, the ensemble's lineage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from rooivalk import storage
from rooivalk.data.detection_dataset import DetectionDataset
from rooivalk.events import MetricsFn, ProgressFn
from rooivalk.models.artifact import INFO_FILE
from rooivalk.models.detector_artifact import member_path, read_detector_info
from rooivalk.plan import DetectorSpec, ModelSpec, Plan, detector_member_plan
from rooivalk.training.members import finished_member, member_events, save_member_result
from rooivalk.training.results import TrainResult

log = logging.getLogger(__name__)


# (plan, spec, dataset, model_dir, progress, log_metrics, lineage digest, member weight digests) -> result
TrainOne = Callable[
    [Plan, ModelSpec, DetectionDataset, str, ProgressFn | None, MetricsFn | None, str, Sequence[str]], TrainResult
]


def member_plan(plan: Plan, member: int) -> Plan:
    """Member `member` of the plan's ensemble as the plan it trains: its seed, budget share and overrides
    (rooivalk.plan.detector_members; PlanError naming its overrides when they do not validate), and its own
    checkpoint folder (member 0 keeps the plan's): member_<k>/<its plan's digest>, so that a member cut off
    resumes and one whose plan changed trains afresh (the engine resumes whatever checkpoint it finds;
    the old member's stay where they were)."""
    alone = detector_member_plan(plan, member)
    checkpoint = alone.training.checkpoint
    if not member or checkpoint.uri is None:
        return alone
    folder = f"{checkpoint.uri.rstrip('/')}/member_{member}/{alone.digest()[:16]}"
    checkpoint = checkpoint.model_copy(update={"uri": folder})
    return alone.model_copy(update={"training": alone.training.model_copy(update={"checkpoint": checkpoint})})


def train_ensemble(
    plan: Plan,
    spec: ModelSpec,
    dataset: DetectionDataset,
    model_dir: str,
    train_one: TrainOne,
    progress: ProgressFn | None = None,
    log_metrics: MetricsFn | None = None,
) -> TrainResult:
    """Every member of the ensemble in `spec` (see the module docstring). The run's metrics are member 0's,
    and member_<k>_* for the others; its artifacts name members' files members/<k>/..."""
    ensemble = spec.detector.ensemble if spec.detector is not None else None
    assert ensemble is not None
    members = ensemble.members
    version = dataset.info.version_id
    resume = plan.training.checkpoint.resume and plan.training.checkpoint.uri is not None
    if storage.exists(f"{model_dir}/{INFO_FILE}"):
        storage.delete(f"{model_dir}/{INFO_FILE}")  # complete again only when member 0 is saved, last
    detector = spec.detector or DetectorSpec()
    # Every member's plan first: an override that does not validate fails before any member trains.
    plans = [member_plan(plan, member) for member in range(members)]
    metrics: dict[str, float] = {}
    artifacts: dict[str, str] = {}
    weights: list[str] = []
    for member in range(1, members):
        folder = f"{model_dir}/{member_path(member)}"
        # A member's model.json records its own plan's digest: it is kept while that plan (the ensemble's
        # minus the fusion settings and the other members' overrides) and the dataset stay the same.
        lineage = plans[member].digest()
        result = finished_member(folder, lineage, version, read_detector_info) if resume else None
        if result is not None:
            log.info("ensemble member %d of %d: already trained for its plan (%s), kept", member, members, folder)
        else:
            events = member_events(progress, member, members)
            # Only member 0's per-epoch figures are logged as the run's: the others' would interleave.
            # A detector of its own (no ensemble) with its own post-process: its model.json says so.
            alone = spec.model_copy(update={"detector": detector.member(member)})
            result = train_one(plans[member], alone, dataset, folder, events, None, lineage, ())
            save_member_result(folder, result)
        weights.append(read_detector_info(folder).weights_sha256 or "")
        metrics |= {f"member_{member}_{key}": value for key, value in result.metrics.items()}
        artifacts |= {f"{member_path(member)}/{name}": sha for name, sha in result.artifacts.items()}
    events = member_events(progress, 0, members)
    result = train_one(plans[0], spec, dataset, model_dir, events, log_metrics, plan.digest(), weights)
    return TrainResult(
        result.metrics | metrics,
        result.stages,
        result.artifacts | artifacts,
        resumed_from=result.resumed_from,
        history=result.history,
    )
