"""`train_model` for detector plans: the `detector` family on a detection dataset, through the engine.

The model trains through rooivalk.training.engine.fitting.fit_model like every other model (stages and
progressive unfreezing over its stem / blocks / neck / head groups, per-group learning rates, optimizer,
schedulers, early stopping on mAP@0.5, checkpoints every N epochs and resume, EMA, AMP, seeds); the
task (rooivalk.training.tasks.detection) makes letterboxed, augmented batches and scores mAP. The best
epoch's weights are saved with model.json (rooivalk.models.detector_artifact).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch

from rooivalk import storage
from rooivalk.data.detection_dataset import DetectionDataset, load_detection_dataset
from rooivalk.events import MetricsFn, ProgressFn
from rooivalk.models.detector import Detector
from rooivalk.models.detector_artifact import DetectorInfo, save_detector
from rooivalk.models.groups import layer_groups
from rooivalk.models.registry import create_model
from rooivalk.plan import DetectionAugmentSpec, DetectorSpec, ModelSpec, Plan
from rooivalk.training.detector_ensemble import train_ensemble
from rooivalk.training.engine.fitting import fit_model
from rooivalk.training.engine.loop import Trainer
from rooivalk.training.engine.runtime import seed_everything
from rooivalk.training.engine.stages import model_stages
from rooivalk.training.results import HISTORY_FILE, TrainResult
from rooivalk.training.tasks.detection import DetectionTraining
from rooivalk.training.tasks.detection_augment import DetectionAugment, DetectionAugmentSettings

SCORE = "val_map50"


def resolved_detector_spec(spec: ModelSpec, dataset: DetectionDataset) -> ModelSpec:
    """The plan's model with the dataset's class count and model.detector's defaults written out."""
    classes = len(dataset.info.classes)
    if spec.num_classes != "auto" and spec.num_classes != classes:
        raise ValueError(f"model.num_classes is {spec.num_classes} but dataset {dataset.info.version_id} has {classes}")
    return spec.model_copy(update={"num_classes": classes, "detector": spec.detector or DetectorSpec()})


def detection_augment(spec: DetectionAugmentSpec | None) -> DetectionAugment | None:
    if spec is None:
        return None
    fields = spec.model_dump(exclude={"multi_scale"})  # the settings' fields, one for one
    return DetectionAugment(DetectionAugmentSettings(**{**fields, "scale": tuple(fields["scale"])}))


def detection_task(plan: Plan, spec: ModelSpec, dataset: DetectionDataset) -> DetectionTraining:
    settings = spec.detector or DetectorSpec()
    augment = plan.training.detection_augment
    return DetectionTraining(
        dataset.subset("train"),
        dataset.subset("val"),
        (settings.input_height, settings.input_width),
        settings.operating_threshold,
        augment=detection_augment(augment),
        multi_scale=augment.multi_scale if augment is not None else None,
        oversample=plan.training.oversample,
    )


def detector_trainer(
    plan: Plan, dataset_dir: str, device: torch.device, progress: ProgressFn, log_metrics: MetricsFn
) -> Trainer:
    """A Trainer of the plan's detector on the dataset, saving nothing (what `rooivalk lr-find` sweeps)."""
    dataset = load_detection_dataset(dataset_dir)
    spec = resolved_detector_spec(plan.single_model, dataset)
    seed_everything(plan.training.seed, False)  # the head's initial weights are the seed's
    model = create_model(spec, len(dataset.info.classes)).to(device)
    groups = layer_groups(model)
    task = detection_task(plan, spec, dataset)
    stages = model_stages(plan.training, spec.pretrained is not None, groups, task.can_cache_features(model))
    return Trainer(model, groups, stages, task, plan.training, progress, log_metrics, None, device=device)


def train_detector(
    plan: Plan,
    dataset_dir: str,
    model_dir: str,
    progress: ProgressFn | None = None,
    log_metrics: MetricsFn | None = None,
) -> TrainResult:
    """Train the plan's detector on the detection dataset at `dataset_dir`; write it to `model_dir`; with
    model.detector.ensemble, every member (rooivalk.training.detector_ensemble)."""
    dataset = load_detection_dataset(dataset_dir)
    spec = resolved_detector_spec(plan.single_model, dataset)
    if spec.detector is not None and spec.detector.ensemble is not None:
        return train_ensemble(plan, spec, dataset, model_dir, _train_one, progress, log_metrics)
    return _train_one(plan, spec, dataset, model_dir, progress, log_metrics, plan.digest())


def _train_one(
    plan: Plan,
    spec: ModelSpec,
    dataset: DetectionDataset,
    model_dir: str,
    progress: ProgressFn | None,
    log_metrics: MetricsFn | None,
    lineage: str,
    member_weights: Sequence[str] = (),
) -> TrainResult:
    """One detector through the engine, saved to `model_dir` with its history. `lineage`: the plan digest
    model.json records, the user's plan's (an ensemble member 1.. records its own plan's, which differs in
    seed, budget and overrides: rooivalk.training.detector_ensemble); `member_weights`: an ensemble root's
    members' weight digests."""
    seed_everything(plan.training.seed, plan.training.deterministic)  # the head's initial weights are the seed's
    model = create_model(spec, len(dataset.info.classes))
    assert isinstance(model, Detector)
    task = detection_task(plan, spec, dataset)
    fit = fit_model(
        model,
        task,
        plan.training,
        pretrained=spec.pretrained is not None,
        checkpoint_uri=plan.training.checkpoint.uri,
        plan_digest=plan.digest(),
        progress=progress,
        log_metrics=log_metrics,
    )
    settings = spec.detector or DetectorSpec()
    info = DetectorInfo(
        spec=spec,
        classes=list(dataset.info.classes),
        input_height=settings.input_height,
        input_width=settings.input_width,
        mean=model.mean,
        std=model.std,
        operating_threshold=settings.operating_threshold,
        dataset_version=dataset.info.version_id,
        plan_digest=lineage,
        member_weights_sha256=list(member_weights),
    )
    artifacts = save_detector(model_dir, model, info)
    # The engine names its best score best_val_accuracy whatever the task; a detector's is mAP@0.5.
    stages = [{(f"best_{SCORE}" if k == "best_val_accuracy" else k): v for k, v in s.items()} for s in fit.stages]
    artifacts[HISTORY_FILE] = storage.write_text(f"{model_dir}/{HISTORY_FILE}", json.dumps(stages, indent=2))
    metrics = {
        f"best_{SCORE}": fit.best_val_accuracy,
        "best_epoch": float(fit.best_epoch),
        "train_seconds": fit.seconds,
        "num_stages": float(len(fit.stages)),
        "parameters": float(sum(p.numel() for p in model.parameters())),
    }
    for stage in stages:
        for key in ("trainable_params", "trainable_share", f"best_{SCORE}", "seconds", "epochs"):
            if key in stage:
                metrics[f"stage_{stage['stage']}_{key}"] = float(stage[key])
    history = [({k: v for k, v in h.items() if isinstance(v, float)}, int(h["epoch"])) for h in fit.history]
    return TrainResult(metrics, stages, artifacts, resumed_from=fit.resumed_from, history=history)
