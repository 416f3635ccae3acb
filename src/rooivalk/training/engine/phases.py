"""Compression phases: after a model's stages, prune it and/or fine-tune it quantization-aware, on the engine.

A phase changes the trained model (prunes it, or puts fake quantization in its forward pass), then
trains every group for the phase's epochs through the same engine as the stages (its own Trainer:
optimizer, schedule, early stopping, EMA, checkpoints and resume all apply), keeps its best epoch by
the monitored metric, and makes the change permanent. What ships is the compressed model, so the
best epoch is chosen among the phase's epochs only: a pruned model is never swapped back for the
unpruned one because the latter scored higher.

Phases run in a fixed order, pruning then QAT: QAT fits the weights to the INT8 grid the export
quantizes them onto (ONNX Runtime calibrates the ranges again), so nothing may change them after it.
Each phase checkpoints under `<checkpoint uri>/<phase name>`; a rerun first restores the finished
stages (their last checkpoint), redoes the phase's deterministic change on the same best weights,
then resumes the phase.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from rooivalk.events import MetricsFn, ProgressFn
from rooivalk.models import fake_quant, pruning
from rooivalk.models.groups import layer_groups
from rooivalk.plan import PruningSpec, QATSpec, SchedulerSpec, TrainingSpec
from rooivalk.training.engine.checkpoint import CheckpointStore
from rooivalk.training.engine.checkpointing import RunCheckpointer
from rooivalk.training.engine.distillation import Teacher
from rooivalk.training.engine.freezing import set_trainable
from rooivalk.training.engine.loop import Trainer
from rooivalk.training.engine.stages import ResolvedStage
from rooivalk.training.engine.state import RunPosition
from rooivalk.training.tasks.base import Task

# A phase fine-tunes from weights that already fit: no warm-up, a cosine decay from its LR.
PHASE_SCHEDULE = SchedulerSpec(name="cosine", warmup_fraction=0.0, new_group_warmup_fraction=0.0)


class CompressionPhase(Protocol):
    """One change to a trained model and its fine-tuning (rooivalk.training.qat, rooivalk.training.pruning)."""

    name: str  # the phase's stage name in summaries and metrics: "prune", "qat"
    epochs: int
    lr: float

    def prepare(self, model: nn.Module, task: Task) -> None:
        """Change `model` in place before the phase trains it (deterministic given its weights)."""

    def finish(self, model: nn.Module) -> dict[str, float]:
        """Make the change permanent on the best epoch's weights; metrics to report (e.g. sparsity)."""


@dataclass
class PhaseResult:
    summaries: list[dict[str, Any]]  # the engine's stage summaries of every phase, in order
    metrics: dict[str, float]
    best_epoch: int  # 1-based over the stages and phases: the last phase's best (what ships)
    best_val_accuracy: float
    best_value: float  # the monitored metric at that epoch
    global_steps: int = 0  # optimizer steps of the stages and every phase


class QATPhase:
    """training.qat: fake quantization of what ONNX Runtime's static INT8 runs in 8 bits (models.fake_quant)."""

    name = "qat"

    def __init__(self, spec: QATSpec) -> None:
        self.spec, self.epochs, self.lr = spec, spec.epochs, spec.lr

    def prepare(self, model: nn.Module, task: Task) -> None:
        # One batch, run as the task runs it, finds the layers whose BatchNorm the export folds into them.
        batch = task.eval_batch(2, next(model.parameters()).device)
        fake_quant.prepare(model, self.spec.observer_momentum, example=lambda: task.forward(model, batch))

    def finish(self, model: nn.Module) -> dict[str, float]:
        return {"layers": float(fake_quant.strip(model))}


class PruningPhase:
    """training.pruning: magnitude or channel pruning (rooivalk.models.pruning), then fine-tuning with it kept."""

    name = "prune"

    def __init__(self, spec: PruningSpec) -> None:
        self.spec, self.epochs, self.lr = spec, spec.epochs, spec.lr

    def prepare(self, model: nn.Module, task: Task) -> None:
        device = next(model.parameters()).device
        # Channel pruning traces the model on this batch, run as the task runs it (torch-pruning itself
        # is imported only there, where a plan prunes channels).
        pruning.prune(model, self.spec.method, self.spec.amount, task.eval_batch(2, device), forward=task.forward)

    def finish(self, model: nn.Module) -> dict[str, float]:
        return pruning.make_permanent(model)


def compression_phases(spec: TrainingSpec) -> list[CompressionPhase]:
    """The training section's phases in their order (pruning, then QAT); empty when it sets neither."""
    phases: list[CompressionPhase] = []
    if spec.pruning is not None:
        phases.append(PruningPhase(spec.pruning))
    if spec.qat is not None:
        phases.append(QATPhase(spec.qat))
    return phases


def run_phases(
    model: nn.Module,
    task: Task,
    spec: TrainingSpec,
    after: RunPosition,
    device: torch.device,
    checkpoint_uri: str,
    plan_digest: str,
    progress: ProgressFn,
    log_metrics: MetricsFn,
    stop_requested: Callable[[], bool] = lambda: False,
    teacher: Teacher | None = None,
) -> PhaseResult:
    """Run the section's phases on `model` (on `device`, at its best weights), continuing the epoch and
    step counts of the stages' run `after`; leaves the model on `device` at the last phase's best epoch.
    `teacher`: training.distillation's, so a phase fine-tunes on the same loss as the stages."""
    result = PhaseResult([], {}, after.best_epoch, float("nan"), float("nan"))
    position = after
    for phase in compression_phases(spec):
        phase.prepare(model, task)
        groups = layer_groups(model)
        stage = ResolvedStage(
            phase.name, phase.epochs, {group.name: phase.lr for group in groups}, scheduler=PHASE_SCHEDULE
        )
        store = CheckpointStore(f"{checkpoint_uri.rstrip('/')}/{phase.name}", spec.checkpoint.keep_last)
        checkpointer = RunCheckpointer(store, f"{plan_digest}:{phase.name}")
        trainer = Trainer(
            model,
            groups,
            [stage],
            task,
            spec,
            progress,
            log_metrics,
            checkpointer,
            device,
            stop_requested,
            teacher=teacher,
        )
        # Epochs and steps go on from the stages' count: metrics of a phase never overwrite a stage's.
        trainer.position.global_epoch, trainer.position.global_step = position.global_epoch, position.global_step
        if spec.checkpoint.resume:
            checkpointer.resume(trainer, progress)
        progress({"event": "message", "text": f"{phase.name}: fine-tuning {phase.epochs} epochs at lr {phase.lr:g}"})
        trainer.fit()
        model.load_state_dict(trainer.best_state or model.state_dict())
        set_trainable(model, groups, {group.name for group in groups})
        result.metrics |= {f"{phase.name}_{key}": value for key, value in phase.finish(model).items()}
        position = trainer.position
        result.summaries += position.stage_summaries
        result.best_epoch, result.global_steps = position.best_epoch, position.global_step
        result.best_value = float("nan") if position.best_value is None else position.best_value
        result.best_val_accuracy = max((s["best_val_accuracy"] for s in position.stage_summaries), default=float("nan"))
    return result
