"""`train_model`: fine-tune or train the plan's model on a dataset artifact, stage by stage.

Resumes automatically from the newest verified checkpoint at `training.checkpoint.uri`, and turns
SIGTERM (what Kubernetes sends before killing a pod) into a checkpoint and a clean stop.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rooivalk import storage
from rooivalk.data.dataset import Dataset, load_dataset
from rooivalk.models import (
    LayerGroup,
    ModelInfo,
    create_model,
    input_channels,
    layer_groups,
    normalization,
    save_trained_model,
)
from rooivalk.plan import Plan
from rooivalk.training.checkpoint import CheckpointStore, check_signature, model_signature
from rooivalk.training.distributed import DistContext, in_torchrun, init_process_group, launch, shutdown
from rooivalk.training.loop import MetricsFn, ProgressFn, TrainData, Trainer
from rooivalk.training.stages import ResolvedStage, plan_stages
from rooivalk.training.validation import InputSpec

log = logging.getLogger(__name__)
HISTORY_FILE = "stages.json"


@dataclass
class TrainResult:
    metrics: dict[str, float]
    stages: list[dict[str, Any]]
    artifacts: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    info: ModelInfo | None = None
    resumed_from: str | None = None
    history: list[tuple[dict[str, float], int]] = field(default_factory=list)  # per-epoch metrics

    def to_record(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "stages": self.stages,
            "artifacts": self.artifacts,
            "resumed_from": self.resumed_from,
            "history": self.history,
        }


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # Deterministic kernels make a resumed run bit-identical to an uninterrupted one.
    torch.use_deterministic_algorithms(deterministic)


def _num_classes(plan: Plan, dataset_classes: list[str]) -> int:
    wanted = plan.single_model.num_classes
    if wanted == "auto":
        return len(dataset_classes)
    if wanted != len(dataset_classes):
        raise ValueError(
            f"model.num_classes is {wanted} but the dataset has {len(dataset_classes)} classes: {dataset_classes}"
        )
    return wanted


@contextmanager
def sigterm_requests_stop() -> Iterator[threading.Event]:
    """While active, SIGTERM sets the event instead of killing the process (main thread only)."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: event.set())
    try:
        yield event
    finally:
        signal.signal(signal.SIGTERM, previous)


def training_device(precision: str) -> torch.device:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("training.precision: fp16 needs a CUDA GPU (use bf16 on CPU)")
    return device


def noop(*_: Any) -> None:
    return None


def train_model(
    plan: Plan,
    dataset_dir: str,
    model_dir: str,
    progress: ProgressFn | None = None,
    log_metrics: MetricsFn | None = None,
) -> TrainResult:
    """Train per the plan's stages and write the best model (by the monitored metric) to `model_dir`.

    With `training.distributed.nproc_per_node > 1` this launches torchrun and waits for it.
    """
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
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
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
) -> Trainer:
    """A Trainer for the plan's model, stages and a loaded dataset (no checkpointing until `save`
    is set; `train_model` sets it, `find_lr` never saves)."""
    spec = plan.training
    num_classes = _num_classes(plan, dataset.info.classes)
    model, groups, stages = _build_model(plan, num_classes, device)
    mean, std = normalization(model)
    in_chans = input_channels(model)
    data = TrainData(dataset.subset("train"), dataset.subset("val"), num_classes)
    inputs = InputSpec(plan.single_model.input_size, in_chans, mean, std, spec.channels_last)
    return Trainer(
        model,
        groups,
        stages,
        data,
        inputs,
        spec,
        progress,
        log_metrics,
        noop,
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
    with sigterm_requests_stop() as stop:
        trainer = build_trainer(plan, dataset, device, progress or noop, record_metrics, context, stop.is_set)
        model, inputs = trainer.model, trainer.inputs
        signature = model_signature(model)
        with tempfile.TemporaryDirectory(prefix="rooivalk-ckpt-") as scratch:
            store = CheckpointStore(spec.checkpoint.uri or scratch, spec.checkpoint.keep_last)

            def save(trainer: Trainer, reason: str) -> None:
                if not context.is_main:
                    return
                pos = trainer.position
                state = {**trainer.state_dict(), "signature": signature, "plan_digest": plan.digest()}
                info = {
                    "reason": reason,
                    "stage_index": pos.stage_index,
                    "epoch_in_stage": pos.epoch_in_stage,
                    "step_in_epoch": pos.step_in_epoch,
                    "best_value": pos.best_value,
                }
                store.save(state, pos.global_step, info)
                if reason == "epoch" and pos.best_epoch == pos.global_epoch:
                    store.save_best(trainer.best_state, {"epoch": pos.best_epoch, "value": pos.best_value})

            trainer.save = save
            resumed = _resume(trainer, store, signature, spec.checkpoint.resume and spec.checkpoint.uri is not None)
            if resumed is None:
                trainer.enter_stage(0)
            else:
                (progress or noop)({"event": "message", "text": f"resumed from {resumed}"})
            trainer.fit()
    if not context.is_main:  # rank 0 writes the model
        return TrainResult(metrics={}, stages=trainer.position.stage_summaries, resumed_from=resumed)
    result = _finish(plan, trainer, model, dataset.info, inputs.in_chans, inputs.mean, inputs.std, model_dir, resumed)
    result.history = history
    return result


def _resume(trainer: Trainer, store: CheckpointStore, signature: dict[str, list[int]], enabled: bool) -> str | None:
    if not enabled:
        return None
    loaded = store.load_latest()
    if loaded is None:
        return None
    check_signature(loaded.state["signature"], signature, store.uri)
    trainer.load_state_dict(loaded.state)
    pos = trainer.position
    where = (
        f"{store.uri}/{loaded.entry['file']} "
        f"(stage {pos.stage_index}, epoch {pos.epoch_in_stage}, step {pos.step_in_epoch})"
    )
    log.info("resuming from %s", where)
    return where


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
) -> TrainResult:
    pos = trainer.position
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
    model = model.cpu().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    artifacts = save_trained_model(model_dir, model, info)
    summaries = pos.stage_summaries
    artifacts[HISTORY_FILE] = storage.write_text(f"{model_dir}/{HISTORY_FILE}", json.dumps(summaries, indent=2))
    metrics = {
        "best_val_accuracy": max((s["best_val_accuracy"] for s in summaries), default=float("nan")),
        "best_monitored": pos.best_value if pos.best_value is not None else float("nan"),
        "best_epoch": float(pos.best_epoch),
        "global_steps": float(pos.global_step),
        "train_seconds": sum(s["seconds"] for s in summaries),
        "num_stages": float(len(summaries)),
    }
    for summary in summaries:
        for key in ("trainable_params", "trainable_share", "best_val_accuracy", "seconds", "epochs"):
            metrics[f"stage_{summary['stage']}_{key}"] = summary[key]
    return TrainResult(metrics=metrics, stages=summaries, artifacts=artifacts, info=info, resumed_from=resumed)
