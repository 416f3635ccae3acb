"""Training an image plan's model (a timm or plugin image family) through the engine, stage by stage.

`train_image_model` is what `train_model` runs for image plans (torchrun for distributed training);
`train_image_on` trains on an already loaded dataset in this process (a cross-validation fold).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch

from rooivalk import storage
from rooivalk.data.dataset import Dataset, load_dataset
from rooivalk.events import MetricsFn, ProgressFn
from rooivalk.models import (
    LayerGroup,
    ModelInfo,
    create_model,
    input_channels,
    layer_groups,
    normalization,
    save_trained_model,
)
from rooivalk.models.registry import family_task
from rooivalk.plan import Plan
from rooivalk.training.engine.checkpoint import CheckpointStore
from rooivalk.training.engine.checkpointing import RunCheckpointer
from rooivalk.training.engine.distributed import DistContext, in_torchrun, init_process_group, launch, shutdown
from rooivalk.training.engine.loop import Checkpointer, Trainer
from rooivalk.training.engine.phases import PhaseResult, compression_phases, run_phases
from rooivalk.training.engine.runtime import noop, seed_everything, sigterm_requests_stop, training_device
from rooivalk.training.engine.stages import ResolvedStage, plan_stages
from rooivalk.training.results import HISTORY_FILE, TrainResult, stage_metrics
from rooivalk.training.tasks import task_class
from rooivalk.training.teachers import ImageInputs, image_teacher

log = logging.getLogger(__name__)


def _num_classes(plan: Plan, dataset_classes: list[str]) -> int:
    wanted = plan.single_model.num_classes
    if wanted == "auto":
        return len(dataset_classes)
    if wanted != len(dataset_classes):
        raise ValueError(
            f"model.num_classes is {wanted} but the dataset has {len(dataset_classes)} classes: {dataset_classes}"
        )
    return wanted


def train_image_model(
    plan: Plan,
    dataset_dir: str,
    model_dir: str,
    progress: ProgressFn | None = None,
    log_metrics: MetricsFn | None = None,
) -> TrainResult:
    """Train an image plan's model on the dataset at `dataset_dir`; with `training.distributed.nproc_per_node
    > 1` this launches torchrun and waits for it (each rank runs train_model again, inside torchrun)."""
    spec = plan.training
    if spec.distributed.processes > 1 and not in_torchrun():
        record = launch(plan, dataset_dir, model_dir)
        for metrics, step in record["history"]:  # rank 0 could not reach this process's logger
            (log_metrics or noop)(metrics, step)
        return TrainResult(
            record["metrics"],
            record["stages"],
            record["artifacts"],
            resumed_from=record["resumed_from"],
            history=[tuple(h) for h in record["history"]],
        )
    seed_everything(spec.seed, spec.deterministic)
    torch.set_num_threads(spec.threads or os.cpu_count() or 1)
    device = training_device(spec.precision)
    context = init_process_group(spec.distributed.backend, device)
    if device.type == "cuda" and context.enabled:
        device = torch.device("cuda", context.local_rank)
    try:
        result, _ = _train(
            plan, load_dataset(dataset_dir), model_dir, device, context, progress, log_metrics, spec.checkpoint.uri
        )
    finally:
        shutdown(context)
    return result


def train_image_on(
    plan: Plan,
    dataset: Dataset,
    model_dir: str,
    progress: ProgressFn | None,
    log_metrics: MetricsFn | None,
    checkpoint_uri: str | None,
) -> tuple[TrainResult, Trainer]:
    """Train on a loaded dataset's train split, choosing the best epoch on its val split, in this process
    (a cross-validation fold passes a dataset whose splits are the fold's); the result and the Trainer,
    whose model is at its best epoch on the CPU and whose task holds the val split."""
    spec = plan.training
    seed_everything(spec.seed, spec.deterministic)
    torch.set_num_threads(spec.threads or os.cpu_count() or 1)
    device = training_device(spec.precision)
    return _train(plan, dataset, model_dir, device, DistContext(), progress, log_metrics, checkpoint_uri)


def _build_model(
    plan: Plan, num_classes: int, device: torch.device
) -> tuple[torch.nn.Module, list[LayerGroup], list[ResolvedStage]]:
    """The plan's model on its device and memory format, its layer groups and resolved stages."""
    spec = plan.training
    model = create_model(plan.single_model, num_classes).to(device)
    if spec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    groups = layer_groups(model)
    stages = plan_stages(plan, groups)
    if spec.bn_frozen != "eval" and any(stage.cache_features for stage in stages):
        raise ValueError("training.stages: cache_features needs training.bn_frozen: eval (frozen statistics)")
    return model, groups, stages


def build_trainer(
    plan: Plan,
    dataset: Dataset,
    device: torch.device,
    progress: ProgressFn,
    log_metrics: MetricsFn,
    context: DistContext | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
    checkpointer: Checkpointer | None = None,
) -> Trainer:
    """A Trainer for the plan's image model, stages and a loaded dataset (`checkpointer` None: nothing
    is saved, as `find_lr` wants)."""
    spec = plan.training
    num_classes = _num_classes(plan, dataset.info.classes)
    model, groups, stages = _build_model(plan, num_classes, device)
    task = task_class(family_task(plan.single_model.family)).for_plan(plan, dataset, model)
    teacher = None
    if spec.distillation is not None:  # checked against the student's classes and image preparation
        inputs = ImageInputs(plan.single_model.input_size, input_channels(model), *normalization(model))
        teacher = image_teacher(spec.distillation, list(dataset.info.classes), inputs)
    return Trainer(
        model,
        groups,
        stages,
        task,
        spec,
        progress,
        log_metrics,
        checkpointer,
        device=device,
        stop_requested=stop_requested,
        dist=context or DistContext(),
        teacher=teacher,
    )


def _train(
    plan: Plan,
    dataset: Dataset,
    model_dir: str,
    device: torch.device,
    context: DistContext,
    progress: ProgressFn | None,
    log_metrics: MetricsFn | None,
    checkpoint_uri: str | None,
) -> tuple[TrainResult, Trainer]:
    spec = plan.training
    history: list[tuple[dict[str, float], int]] = []

    def record_metrics(metrics: dict[str, float], step: int) -> None:
        if context.is_main:  # only rank 0 reports
            history.append((dict(metrics), step))
            (log_metrics or noop)(metrics, step)

    if not context.is_main:
        progress = noop
    with sigterm_requests_stop() as stop, tempfile.TemporaryDirectory(prefix="rooivalk-ckpt-") as scratch:
        store = CheckpointStore(checkpoint_uri or scratch, spec.checkpoint.keep_last)
        checkpointer = RunCheckpointer(store, plan.digest(), context.is_main)
        trainer = build_trainer(
            plan, dataset, device, progress or noop, record_metrics, context, stop.is_set, checkpointer
        )
        resumed = None
        if spec.checkpoint.resume and checkpoint_uri is not None:
            resumed = checkpointer.resume(trainer, progress)
        trainer.fit()
        compressed = None
        if compression_phases(spec):  # validate refuses them with distributed training: one process here
            trainer.model.load_state_dict(trainer.best_state or trainer.model.state_dict())
            compressed = run_phases(
                trainer.model,
                trainer.task,
                spec,
                trainer.position,
                device,
                checkpoint_uri or scratch,
                plan.digest(),
                progress or noop,
                record_metrics,
                stop.is_set,
                trainer.teacher,
            )
    if not context.is_main:  # rank 0 writes the model
        return TrainResult(metrics={}, stages=trainer.position.stage_summaries, resumed_from=resumed), trainer
    mean, std = normalization(trainer.model)
    in_chans = input_channels(trainer.model)
    result = _finish(plan, trainer, trainer.model, dataset.info, in_chans, mean, std, model_dir, resumed, compressed)
    result.history = history
    return result, trainer


def _finish(
    plan: Plan,
    trainer: Trainer,
    model: torch.nn.Module,
    dataset_info: Any,
    in_chans: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    model_dir: str,
    resumed: str | None,
    compressed: PhaseResult | None = None,
) -> TrainResult:
    """Save the model at its best epoch (the compression phases' best: they left it loaded) and its metrics."""
    pos = trainer.position
    if compressed is None:
        model.load_state_dict(trainer.best_state or model.state_dict())
    info = ModelInfo(
        spec=plan.single_model,
        classes=dataset_info.classes,
        input_size=plan.single_model.input_size,
        in_chans=in_chans,
        mean=mean,
        std=std,
        dataset_version=dataset_info.version_id,
        plan_digest=plan.digest(),
    )
    model = model.cpu().to(memory_format=torch.contiguous_format)
    artifacts = save_trained_model(model_dir, model, info)
    summaries = pos.stage_summaries + (compressed.summaries if compressed else [])
    artifacts[HISTORY_FILE] = storage.write_text(f"{model_dir}/{HISTORY_FILE}", json.dumps(summaries, indent=2))
    metrics = {
        "best_val_accuracy": max((s["best_val_accuracy"] for s in summaries), default=float("nan")),
        "best_monitored": pos.best_value if pos.best_value is not None else float("nan"),
        "best_epoch": float(compressed.best_epoch if compressed else pos.best_epoch),
        "global_steps": float(pos.global_step),
        "train_seconds": sum(s["seconds"] for s in summaries),
        "num_stages": float(len(summaries)),
    }
    metrics |= stage_metrics(summaries) | (compressed.metrics if compressed else {})
    if compressed is not None:  # the compressed model ships: its best figures and steps, not the stages'
        metrics["best_monitored"] = compressed.best_value
        metrics["best_val_accuracy"] = compressed.best_val_accuracy
        metrics["global_steps"] = float(compressed.global_steps)
    return TrainResult(metrics=metrics, stages=summaries, artifacts=artifacts, info=info, resumed_from=resumed)
