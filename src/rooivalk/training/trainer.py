"""`train_model`: fine-tune or train a single-model plan's model on a dataset artifact, stage by stage.

Resumes automatically from the newest verified checkpoint at `training.checkpoint.uri`, and turns
SIGTERM (what Kubernetes sends before killing a pod) into a checkpoint and a clean stop.
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
from rooivalk.data.datasets import load_array_dataset
from rooivalk.events import MetricsFn, ProgressFn
from rooivalk.models import (
    LayerGroup,
    ModelInfo,
    create_model,
    create_unweighted_model,
    input_channels,
    layer_groups,
    normalization,
    save_trained_model,
)
from rooivalk.models.registry import family_task
from rooivalk.plan import ARRAY_FORMATS, DETECTION_FORMATS, Plan, variant_plans
from rooivalk.training.array_training import train_array_model
from rooivalk.training.cross_validation import cross_validate
from rooivalk.training.detection_training import train_detector
from rooivalk.training.engine.checkpoint import CheckpointStore
from rooivalk.training.engine.checkpointing import RunCheckpointer
from rooivalk.training.engine.distributed import DistContext, in_torchrun, init_process_group, launch, shutdown
from rooivalk.training.engine.loop import Checkpointer, Trainer
from rooivalk.training.engine.phases import PhaseResult, compression_phases, run_phases
from rooivalk.training.engine.runtime import noop, seed_everything, sigterm_requests_stop, training_device
from rooivalk.training.engine.stages import ResolvedStage, model_stages, plan_stages
from rooivalk.training.results import HISTORY_FILE, TrainResult, stage_metrics
from rooivalk.training.tasks import task_class
from rooivalk.training.variant_training import train_variants

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


def train_model(
    plan: Plan,
    dataset_dir: str,
    model_dir: str,
    progress: ProgressFn | None = None,
    log_metrics: MetricsFn | None = None,
) -> TrainResult:
    """Train per the plan's stages and write the best model (by the monitored metric) to `model_dir`.

    With `training.distributed.nproc_per_node > 1` this launches torchrun and waits for it. A sequence
    or table plan trains its rnn or mlp model (rooivalk.training.array_training), a detector plan its
    detector (rooivalk.training.detection_training); with `evaluation.cross_validation`, its k fold models
    first (rooivalk.training.cross_validation); with `variants`, each member plan's model
    (rooivalk.training.variant_training).
    """
    if plan.data.format in ARRAY_FORMATS and plan.evaluation.cross_validation is not None:
        return cross_validate(plan, load_array_dataset(dataset_dir), model_dir, progress, log_metrics)
    if plan.data.format in ARRAY_FORMATS and plan.variants is not None:
        return train_variants(plan, dataset_dir, model_dir, progress, log_metrics)
    if plan.data.format in ARRAY_FORMATS:
        return train_array_model(plan, dataset_dir, model_dir, progress, log_metrics)
    if plan.data.format in DETECTION_FORMATS:
        return train_detector(plan, dataset_dir, model_dir, progress, log_metrics)
    spec = plan.training
    if spec.distributed.nproc_per_node * spec.distributed.nnodes > 1 and not in_torchrun():
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
        result = _train(plan, dataset_dir, model_dir, device, context, progress, log_metrics)
    finally:
        shutdown(context)
    return result


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
    )


def _train(
    plan: Plan,
    dataset_dir: str,
    model_dir: str,
    device: torch.device,
    context: DistContext,
    progress: ProgressFn | None,
    log_metrics: MetricsFn | None,
) -> TrainResult:
    spec = plan.training
    history: list[tuple[dict[str, float], int]] = []

    def record_metrics(metrics: dict[str, float], step: int) -> None:
        if context.is_main:  # only rank 0 reports
            history.append((dict(metrics), step))
            (log_metrics or noop)(metrics, step)

    if not context.is_main:
        progress = noop
    dataset = load_dataset(dataset_dir)
    with sigterm_requests_stop() as stop, tempfile.TemporaryDirectory(prefix="rooivalk-ckpt-") as scratch:
        store = CheckpointStore(spec.checkpoint.uri or scratch, spec.checkpoint.keep_last)
        checkpointer = RunCheckpointer(store, plan.digest(), context.is_main)
        trainer = build_trainer(
            plan, dataset, device, progress or noop, record_metrics, context, stop.is_set, checkpointer
        )
        resumed = None
        if spec.checkpoint.resume and spec.checkpoint.uri is not None:
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
                spec.checkpoint.uri or scratch,
                plan.digest(),
                progress or noop,
                record_metrics,
                stop.is_set,
            )
    if not context.is_main:  # rank 0 writes the model
        return TrainResult(metrics={}, stages=trainer.position.stage_summaries, resumed_from=resumed)
    mean, std = normalization(trainer.model)
    in_chans = input_channels(trainer.model)
    result = _finish(plan, trainer, trainer.model, dataset.info, in_chans, mean, std, model_dir, resumed, compressed)
    result.history = history
    return result


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
    if compressed is not None:  # the compressed model ships: its best monitored value, not the stages'
        metrics["best_monitored"] = compressed.best_value
    return TrainResult(metrics=metrics, stages=summaries, artifacts=artifacts, info=info, resumed_from=resumed)


def check_stages_against_model(plan: Plan) -> list[ResolvedStage]:
    """Resolve the plan's stages on its model (built without weights): an unknown group name fails
    here, at validation, with the model's groups listed, instead of minutes into a pipeline."""
    if plan.variants is not None:  # each member's own model and stages, its errors naming it
        resolved = []
        for k, member in enumerate(variant_plans(plan)):
            try:
                resolved += check_stages_against_model(member)
            except ValueError as error:
                raise ValueError(f"variants.members[{k}]: {error}") from None
        return resolved
    if plan.sensors is None:
        return plan_stages(plan, layer_groups(create_unweighted_model(plan.single_model)))
    resolved = []
    for name, sensor in plan.sensors.items():
        groups = layer_groups(create_unweighted_model(sensor.model))
        try:
            resolved += model_stages(sensor.training, sensor.model.pretrained is not None, groups)
        except ValueError as error:
            raise ValueError(f"sensors.{name}.{error}") from None
    return resolved
