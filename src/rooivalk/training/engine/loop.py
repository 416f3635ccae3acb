"""The one training engine: a plan's stages over one persistent optimizer, for every task, resumable.

The engine draws sample indices and runs stages; its task (rooivalk.training.tasks) makes batches,
runs the model and scores the validation split, so images, sensor tensors and fusion embeddings all
train here. Groups unfrozen at a stage boundary join the optimizer (rooivalk.training.engine.stage_entry)
and every stage gets a fresh schedule over *all* current param groups, with each group's
`initial_lr` reset to its new LR (torch's schedulers `setdefault` it, which is how peers end up never
scheduling groups added after unfreezing). The loop can stop after any optimizer step (SIGTERM, or a
checkpoint every N steps) and resume from a checkpoint to exactly the same state: everything that
changes during training is in `state_dict()`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from rooivalk.events import MetricsFn, ProgressFn
from rooivalk.models.groups import LayerGroup
from rooivalk.plan import OptimizerSpec, TrainingSpec
from rooivalk.training.engine.batchnorm import recalibrate_before_training
from rooivalk.training.engine.budget_planning import replan_budget, replan_interval, steps_for_budget
from rooivalk.training.engine.cached_head import HeadFeatureCache
from rooivalk.training.engine.checkpointing import restore_trainer, trainer_state
from rooivalk.training.engine.distillation import Teacher
from rooivalk.training.engine.distributed import DistContext
from rooivalk.training.engine.early_stopping import EarlyStopping
from rooivalk.training.engine.ema import ModelEMA
from rooivalk.training.engine.engine_view import EngineView
from rooivalk.training.engine.epoch_end import finish_epoch
from rooivalk.training.engine.errors import Preempted, TrainingError
from rooivalk.training.engine.freezing import freeze_batchnorm_of_frozen
from rooivalk.training.engine.losses import build_loss
from rooivalk.training.engine.optim import StageSchedule
from rooivalk.training.engine.sampling import StageSampling
from rooivalk.training.engine.stage_entry import prepare_stage_optimizer
from rooivalk.training.engine.stages import ResolvedStage
from rooivalk.training.engine.state import BudgetClock, RunPosition, step_generator
from rooivalk.training.tasks.base import Inputs, Task


class Checkpointer(Protocol):
    """Writes the trainer's state: `reason` is "step", "epoch", "plan" (a budget stage's step plan
    under `deterministic`) or "preempt"."""

    def save(self, trainer: EngineView, reason: str) -> None: ...


class _NonFiniteLoss(ArithmeticError):
    pass


def _noop(*_: Any) -> None:
    return None


@dataclass
class Trainer:
    model: nn.Module  # on `device`
    groups: list[LayerGroup]
    stages: list[ResolvedStage]
    task: Task
    spec: TrainingSpec
    progress: ProgressFn = _noop
    log_metrics: MetricsFn = _noop
    checkpointer: Checkpointer | None = None  # None: nothing is saved (lr-find, throwaway runs)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    stop_requested: Callable[[], bool] = lambda: False
    dist: DistContext = field(default_factory=DistContext)
    teacher: Teacher | None = None  # training.distillation: not trained, not in the checkpoint

    def __post_init__(self) -> None:
        counts = np.bincount(self.task.train_labels, minlength=self.task.num_classes)
        self.criterion = build_loss(self.spec.loss, counts)
        self.total_params = sum(p.numel() for p in self.model.parameters())
        for stage in self.stages:
            if stage.input_size is not None and not self.task.stage_input_size:
                raise ValueError(
                    f"training.stages[{stage.name}].input_size: the {self.task.name} task has no input size to change"
                )
            if stage.cache_features and not self.task.can_cache_features(self.model):
                raise ValueError(
                    f"training.stages[{stage.name}].cache_features: the {self.task.name} task cannot cache "
                    f"features of {type(self.model).__name__}"
                )
        # What changes during training; state_dict() saves all of it.
        self.position = RunPosition()
        self.optimizer: torch.optim.Optimizer | None = None
        self.optimizer_spec: OptimizerSpec | None = None
        self.schedule: StageSchedule | None = None
        self.ema = ModelEMA(self.model, self.spec.ema.decay) if self.spec.ema.enabled else None
        self.scaler = torch.amp.GradScaler(self.device.type) if self.spec.precision == "fp16" else None
        self.early_stopping: EarlyStopping | None = None
        self.best_state: dict[str, torch.Tensor] = {}  # best of the run (the result)
        self.stage_best_state: dict[str, torch.Tensor] = {}  # for early stopping's restore
        # Per process, rebuilt on resume.
        self.clock = BudgetClock()
        self.forward_model: nn.Module = self.model  # the DDP wrapper when distributed
        self.trainable_params: list[nn.Parameter] = []  # this stage's, for clipping
        self._entered: int | None = None  # the stage whose optimizer and schedule are built
        self._head_features = HeadFeatureCache()
        self.sampling = StageSampling(np.asarray(self.task.train_labels), self.stages, self.spec, self.dist)
        if self.teacher is not None:
            self.teacher.to(self.device).check(self.task, self.task.eval_batch(2, self.device))

    # -- sizes and orders (rooivalk.training.engine.sampling) ---------------------------------------
    @property
    def rank_batch_size(self) -> int:
        """Per-rank batch: the plan's batch_size is the global batch, split over the ranks."""
        return self.sampling.rank_batch_size

    def current_stage_index(self) -> int:
        """The stage being trained; the last one once every stage has ended (position moves past it)."""
        return min(self.position.stage_index, len(self.stages) - 1)

    def stage_subset(self) -> np.ndarray | None:
        return self.sampling.subset(self.current_stage_index())

    def stage_rows(self, positions: np.ndarray) -> np.ndarray:
        return self.sampling.rows(self.current_stage_index(), positions)

    def samples_per_epoch(self) -> int:
        return self.sampling.samples(self.current_stage_index())

    def batches_per_epoch(self) -> int:
        return self.sampling.batches_per_epoch(self.current_stage_index())

    def epoch_order(self) -> torch.Tensor:
        return self.sampling.epoch_order(self.current_stage_index(), self.position.global_epoch)

    def stage_epochs(self) -> int:
        """Epochs of the current stage; the last one is partial when a budget sized the stage."""
        return math.ceil(self.position.stage_steps / self.batches_per_epoch())

    def batches_in_epoch(self) -> int:
        done = self.position.epoch_in_stage * self.batches_per_epoch()
        return min(self.batches_per_epoch(), self.position.stage_steps - done)

    def elapsed_seconds(self) -> float:
        """Training wall clock so far, across resumes (what a budget counts)."""
        return self.position.elapsed_seconds + self.clock.since_start()

    # -- stages -------------------------------------------------------------------------------
    def enter_stage(self, index: int, steps: int | None = None) -> None:
        """Freeze/unfreeze for stage `index`, join new groups to the optimizer, build its schedule.

        Its length: `epochs` x batches per epoch; for a stage sized by seconds, `steps` when loading a
        checkpoint (a budget is never re-measured), else its seconds over the measured step cost."""
        stage, spec = self.stages[index], self.spec
        self.clock.start()
        if index == 0 and steps is None:
            self.recalibrate_batchnorm_once()  # before a first stage that caches features or probes its cost
        previous = set(self.stages[index - 1].group_lrs) if index > 0 else set()
        optimizer_spec = stage.optimizer or spec.optimizer
        if optimizer_spec != self.optimizer_spec:
            self.optimizer = None  # other optimizer settings: a new optimizer (its state cannot carry over)
            self.optimizer_spec = optimizer_spec
        self.optimizer = prepare_stage_optimizer(
            self.model, self.groups, stage, self.optimizer, optimizer_spec, spec.bn_unfreeze == "affine_early"
        )
        self.trainable_params = [p for p in self.model.parameters() if p.requires_grad]
        self._entered = index
        if stage.epochs is not None:  # the plan's epochs win, also on resume (a longer plan continues)
            self.position.stage_steps = stage.epochs * self.batches_per_epoch()
        else:
            self.position.stage_steps = steps if steps is not None else steps_for_budget(self, stage)
        self.schedule = StageSchedule(
            stage.scheduler or spec.scheduler,
            self.optimizer,
            self.batches_per_epoch(),
            1,
            stage.warmup_epochs,
            mode=spec.early_stopping.mode,
            total_steps=self.position.stage_steps,
            new_groups=frozenset(set(stage.group_lrs) - previous) if index > 0 else frozenset(),
        )
        if spec.early_stopping.enabled:
            self.early_stopping = EarlyStopping(spec.early_stopping)
        # DDP registers gradient hooks for the parameters that train when it is built, so every
        # stage gets a new wrapper (its construction also syncs the weights from rank 0).
        self.forward_model = DistributedDataParallel(self.model) if self.dist.enabled else self.model
        if steps is None and stage.epochs is None and spec.deterministic:
            self.save("plan")  # the step plan is final: a resumed run must find it, not re-measure it

    def recalibrate_batchnorm_once(self) -> None:
        """bn_unfreeze: recalibrate, once per run (rooivalk.training.engine.batchnorm.recalibrate_before_training)."""
        recalibrate_before_training(self)

    def schedule_ready(self) -> StageSchedule:
        if self.schedule is None:
            raise RuntimeError("no stage entered")
        return self.schedule

    def _optimizer_ready(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            raise RuntimeError("no stage entered")
        return self.optimizer

    def save(self, reason: str) -> None:
        if self.checkpointer is not None:
            self.checkpointer.save(self, reason)

    # -- the loop -----------------------------------------------------------------------------
    def fit(self) -> None:
        """Train every stage from the current position (the start, or where a checkpoint left off)."""
        pos = self.position
        self.clock.start()
        if pos.stage_index < len(self.stages) and self._entered != pos.stage_index:
            self.enter_stage(pos.stage_index)
        while pos.stage_index < len(self.stages):
            stage = self.stages[pos.stage_index]
            trainable_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
            self.progress(
                {
                    "event": "stage",
                    "stage": stage.name,
                    "index": pos.stage_index,
                    "epochs": self.stage_epochs(),
                    "steps": pos.stage_steps,
                    "trainable_params": trainable_params,
                    "groups": list(stage.group_lrs),
                }
            )
            stop_stage = pos.stage_stopped  # a checkpoint written as early stopping ended the stage
            while pos.epoch_in_stage < self.stage_epochs() and not stop_stage:
                stop_stage = self.run_epoch(stage)
            if self.early_stopping is not None and self.spec.early_stopping.restore_best and self.stage_best_state:
                self.model.load_state_dict(self.stage_best_state)
            pos.stage_summaries.append(
                {
                    "stage": stage.name,
                    "groups": stage.group_lrs,
                    "epochs": float(pos.epoch_in_stage),
                    "steps": float(pos.stage_steps),
                    "trainable_params": float(trainable_params),
                    "trainable_share": trainable_params / self.total_params,
                    "best_val_accuracy": pos.stage_best if pos.stage_best is not None else float("nan"),
                    "seconds": pos.stage_seconds,
                }
            )
            pos.next_stage()
            if pos.stage_index < len(self.stages):
                self.stage_best_state = {}
                self.enter_stage(pos.stage_index)

    def run_epoch(self, stage: ResolvedStage) -> bool:
        """One epoch from the current position (mid-epoch after a resume); True when early stopping."""
        pos, spec = self.position, self.spec
        bs = self.rank_batch_size
        order = self.epoch_order()  # positions in the stage's samples; the epoch takes its first batches x bs
        self.model.train()
        if spec.bn_frozen == "eval":
            freeze_batchnorm_of_frozen(self.model, self.groups, set(stage.group_lrs))
        self.progress(
            {
                "event": "epoch",
                "stage": stage.name,
                "epoch": pos.epoch_in_stage + 1,
                "epochs": self.stage_epochs(),
                "batches": self.batches_in_epoch(),
            }
        )
        started = self.clock.epoch_started = time.perf_counter()
        steps_before = pos.step_in_epoch
        replan_every = replan_interval(self)
        while pos.step_in_epoch < self.batches_in_epoch():  # a re-plan may lengthen or shorten this epoch
            step = pos.step_in_epoch
            positions = order[step * bs : (step + 1) * bs].sort().values.numpy()
            # Randomness is re-seeded per (step, rank): a resumed run replays it with no saved state.
            generator = step_generator(spec.seed, pos.global_step, self.dist.rank)
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))  # dropout, drop-path
            try:
                loss = self.train_step(stage, positions, generator)
            except _NonFiniteLoss as bad:
                raise TrainingError(
                    f"non-finite loss {bad} in stage {stage.name!r}, epoch {pos.epoch_in_stage + 1}, "
                    f"step {step + 1}; the last good checkpoint is kept"
                ) from None
            terms = self.teacher.last_terms if self.teacher is not None else {}  # the KD and plan loss terms
            loss_sum, seen, stop, *term_sums = self.dist.sum(
                loss * len(positions),
                float(len(positions)),
                float(self.stop_requested()),
                *(value * len(positions) for value in terms.values()),
            )
            for name, total in zip(terms, term_sums, strict=True):
                pos.epoch_term_sums[name] = pos.epoch_term_sums.get(name, 0.0) + total
            pos.step_in_epoch += 1
            pos.global_step += 1
            pos.epoch_loss_sum += loss_sum
            pos.epoch_seen += int(seen)
            self.progress({"event": "batch", "batch": pos.step_in_epoch})
            if stop:  # every rank stops at the same step
                self.save("preempt")
                self.dist.barrier()
                raise Preempted(
                    f"SIGTERM in stage {stage.name!r}, epoch {pos.epoch_in_stage + 1}, step "
                    f"{pos.step_in_epoch}: checkpoint written; rerun the same step to resume"
                )
            if spec.checkpoint.every_steps and pos.global_step % spec.checkpoint.every_steps == 0:
                self.save("step")
            taken = pos.step_in_epoch - steps_before
            if stage.epochs is None and taken % replan_every == 0 and self.clock.validation_seconds > 0:
                step_seconds = (time.perf_counter() - started) / taken
                replan_budget(self, stage, step_seconds, self.clock.validation_seconds)
        seconds = time.perf_counter() - started
        self.clock.epoch_started = None  # end_epoch adds this epoch's seconds to the stage's
        samples_seen = (pos.step_in_epoch - steps_before) * bs * self.dist.world_size
        return self.end_epoch(stage, seconds, samples_seen)

    def autocast(self) -> AbstractContextManager[Any]:
        if self.spec.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.spec.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    @functools.cached_property
    def head_on_features(self) -> nn.Module:
        return self.task.head_on_features(self.model)

    def cached_features(self, stage: ResolvedStage, split: str = "train") -> torch.Tensor:
        """Pre-head features (N, F) of a cached head stage (rooivalk.training.engine.cached_head)."""
        return self._head_features.features(self, stage, split)

    def train_step(self, stage: ResolvedStage, positions: np.ndarray, generator: torch.Generator) -> float:
        """One optimizer step on the samples at `positions` of the stage's training samples."""
        rows = self.stage_rows(positions)
        if stage.cache_features:  # a cached head stage: dropout + classifier on stored features
            features = self.cached_features(stage)[positions].to(self.device)
            target = torch.as_tensor(self.task.train_labels[rows]).to(self.device)
            return self._optimize(lambda: self.criterion(self.head_on_features(features).float(), target))
        inputs, target = self.task.train_batch(rows, stage, generator, self.device)
        if self.teacher is not None:  # the plan's loss on the student's logits plus the KD term
            teacher = self.teacher
            return self._optimize(
                lambda: teacher.training_loss(self.task, self.forward_model, inputs, target, self.criterion)
            )
        return self._optimize(lambda: self.task.training_loss(self.forward_model, inputs, target, self.criterion))

    def _forward(self, inputs: Inputs) -> torch.Tensor:
        return self.task.forward(self.forward_model, inputs)

    def _optimize(self, loss_of: Callable[[], torch.Tensor]) -> float:
        """Forward and loss (`loss_of`), backward, clip, step: one optimizer step; returns the loss."""
        optimizer, schedule = self._optimizer_ready(), self.schedule_ready()
        with self.autocast():
            loss = loss_of()
        if not torch.isfinite(loss):  # before backward: the weights stay as the last good step left them
            raise _NonFiniteLoss(float(loss))
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            self.scaler.unscale_(optimizer)
        else:
            loss.backward()  # type: ignore[no-untyped-call]
        if self.spec.grad_clip_norm:
            nn.utils.clip_grad_norm_(self.trainable_params, self.spec.grad_clip_norm)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        schedule.step_batch()
        if self.ema is not None:
            self.ema.update(self.model)
        return float(loss.detach())

    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None and self.spec.ema.evaluate_with_ema else self.model

    def validate(self, stage: ResolvedStage) -> tuple[float, float]:
        """(score, mean cross-entropy) on the validation split; each rank scores its share. The score is
        the task's `score_name` (accuracy; a detector's mAP@0.5)."""
        shard = slice(self.dist.rank, None, self.dist.world_size)
        if stage.cache_features:  # the rest of the model is frozen: score the head on cached val features
            scores = self._head_features.score(self, self.eval_model(), stage, shard)
        else:
            scores = self.task.evaluate(self.eval_model(), shard, self.spec.eval_batch_size, self.device, self.autocast)
        correct, loss_total, count = self.dist.sum(*scores)
        return correct / max(count, 1), loss_total / max(count, 1)

    def end_epoch(self, stage: ResolvedStage, seconds: float, seen: int) -> bool:
        """Validate, step the epoch schedule, keep the best state, log, checkpoint; True: stop early."""
        lr = max(g["lr"] for g in self._optimizer_ready().param_groups)
        return finish_epoch(self, stage, seconds, seen, lr)

    def state_dict(self) -> dict[str, Any]:
        """Everything that changes during training (rooivalk.training.engine.checkpointing.trainer_state)."""
        return trainer_state(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restore_trainer(self, state)
