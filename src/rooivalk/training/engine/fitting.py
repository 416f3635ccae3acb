"""Run the engine on one model with checkpoints: what every sensor step and the fusion step call.

`fit_model` seeds, picks the device (CUDA when present), resolves the plan's stages on the model's
layer groups, resumes from the newest good checkpoint at `checkpoint_uri` (a rerun or a retried pod
of the same step continues where it stopped), turns SIGTERM into a checkpoint and `Preempted`, and
leaves the model on the CPU at its best validation epoch. A single-model plan's `train_model`
(rooivalk.training.trainer) does the same around distributed training.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rooivalk.events import MetricsFn, ProgressFn
from rooivalk.models.groups import layer_groups
from rooivalk.plan import TrainingSpec
from rooivalk.training.engine.checkpoint import CheckpointStore
from rooivalk.training.engine.checkpointing import RunCheckpointer
from rooivalk.training.engine.distillation import Teacher
from rooivalk.training.engine.freezing import set_trainable
from rooivalk.training.engine.loop import Trainer
from rooivalk.training.engine.phases import run_phases
from rooivalk.training.engine.runtime import seed_everything, sigterm_requests_stop, training_device
from rooivalk.training.engine.stages import model_stages
from rooivalk.training.tasks.base import Task


@dataclass
class FitResult:
    best_val_accuracy: float
    best_epoch: int  # 1-based over all stages
    stages: list[dict[str, Any]] = field(default_factory=list)  # the engine's stage summaries
    history: list[dict[str, Any]] = field(default_factory=list)  # this process's epochs (metrics + stage)
    seconds: float = 0.0
    resumed_from: str | None = None
    compression: dict[str, float] = field(default_factory=dict)  # the phases' metrics (qat_layers, prune_sparsity)


def fit_model(
    model: nn.Module,
    task: Task,
    spec: TrainingSpec,
    pretrained: bool,
    checkpoint_uri: str | None = None,
    plan_digest: str = "",
    progress: ProgressFn | None = None,
    log_metrics: MetricsFn | None = None,
    teacher: Teacher | None = None,
) -> FitResult:
    """Train `model` in place through the training section's stages; returns it on the CPU at its
    best epoch. `checkpoint_uri` None: checkpoints go to a scratch folder (no resume). `teacher`: the
    section's training.distillation teacher (rooivalk.training.teachers), moved to the training device."""
    started = time.perf_counter()
    report = progress or (lambda _event: None)
    history: list[dict[str, Any]] = []

    def record(metrics: dict[str, float], epoch: int) -> None:
        history.append({**metrics, "epoch": epoch})
        if log_metrics is not None:
            log_metrics(metrics, epoch)

    if spec.threads:  # every model the engine fits honours training.threads (fusion's too)
        torch.set_num_threads(spec.threads)
    seed_everything(spec.seed, spec.deterministic)
    device = training_device(spec.precision)
    model.to(device)
    groups = layer_groups(model)
    stages = model_stages(spec, pretrained, groups, cache_head=task.can_cache_features(model))
    with sigterm_requests_stop() as stop, tempfile.TemporaryDirectory(prefix="rooivalk-ckpt-") as scratch:
        store = CheckpointStore(checkpoint_uri or scratch, spec.checkpoint.keep_last)
        checkpointer = RunCheckpointer(store, plan_digest)
        trainer = Trainer(
            model,
            groups,
            stages,
            task,
            spec,
            report,
            record,
            checkpointer,
            device=device,
            stop_requested=stop.is_set,
            teacher=teacher,
        )
        resumed = None
        if spec.checkpoint.resume and checkpoint_uri is not None:
            resumed = checkpointer.resume(trainer, report)
        trainer.fit()
        model.load_state_dict(trainer.best_state or model.state_dict())
        set_trainable(model, groups, {g.name for g in groups})
        pos = trainer.position
        summaries, best_epoch = list(pos.stage_summaries), pos.best_epoch
        best = max((s["best_val_accuracy"] for s in summaries), default=float("nan"))
        compressed = run_phases(
            model, task, spec, pos, device, checkpoint_uri or scratch, plan_digest, report, record, stop.is_set, teacher
        )
    model.cpu()
    if compressed.summaries:  # what ships is the compressed model: its best epoch and score
        summaries += compressed.summaries
        best_epoch, best = compressed.best_epoch, compressed.best_val_accuracy
    return FitResult(
        float(best), best_epoch, summaries, history, time.perf_counter() - started, resumed, compressed.metrics
    )
