"""The training loop: stages of progressive unfreezing over one persistent optimizer, resumable.

One optimizer lives across stages while the optimizer settings stay the same: groups unfrozen at a
stage boundary join it with `add_param_group` (keeping the moments of groups that were already
training), and every stage gets a fresh schedule built over *all* current param groups, with each
group's `initial_lr` reset to its new LR (torch's schedulers `setdefault` it, which is how peers end
up never scheduling groups added after unfreezing). The loop can stop after any optimizer step
(SIGTERM, or a checkpoint every N steps) and resume from a checkpoint to exactly the same state.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from rooivalk.data.transforms import iter_model_batches, normalize, to_unit_images
from rooivalk.models.groups import LayerGroup
from rooivalk.plan_training import OptimizerSpec, TrainingSpec
from rooivalk.training.augment import BatchAugment
from rooivalk.training.batchnorm import batchnorm_affine_names, recalibrate_batchnorm
from rooivalk.training.budget import StepCost, probe_step_cost, steps_within
from rooivalk.training.distributed import DistContext
from rooivalk.training.early_stopping import EarlyStopping
from rooivalk.training.ema import ModelEMA
from rooivalk.training.freezing import freeze_batchnorm_of_frozen, param_groups_for, set_trainable
from rooivalk.training.losses import build_loss
from rooivalk.training.mixing import MixupCutmix
from rooivalk.training.optim import StageSchedule, build_optimizer
from rooivalk.training.stages import ResolvedStage
from rooivalk.training.state import RunPosition, capture_rng, epoch_generator, restore_rng, step_generator
from rooivalk.training.validation import InputSpec, evaluate, evaluate_head

ProgressFn = Callable[[dict[str, Any]], None]
MetricsFn = Callable[[dict[str, float], int], None]
SaveFn = Callable[["Trainer", str], None]


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the message names stage, epoch and step."""


class _NonFiniteLoss(ArithmeticError):
    pass


class Preempted(RuntimeError):
    """SIGTERM arrived; a checkpoint was written and a rerun resumes from it."""


class _HeadOnFeatures(nn.Module):
    """The model's own head (dropout + classifier) applied to cached pre-logit features (B, F)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.classifier = model.get_classifier()  # type: ignore[operator]
        self.drop_rate = float(getattr(model, "drop_rate", 0.0))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        dropped = nn.functional.dropout(features, p=self.drop_rate, training=True)
        return self.classifier(dropped)  # type: ignore[no-any-return]


def native_bf16(device: torch.device) -> bool:
    """Whether the device runs bf16 natively (CUDA with bf16, or a CPU with AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    images: np.ndarray,
    inputs: InputSpec,
    batch_size: int,
    device: torch.device,
    bf16: bool = False,
) -> torch.Tensor:
    """timm's pooled pre-logit features (N, F), float32, in eval mode (no dropout, stored BN
    statistics); `bf16`: the forward pass runs under bf16 autocast."""
    model.eval()
    chunks = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    with autocast:
        for _, batch in iter_model_batches(images, batch_size, *inputs.preprocessing()):
            features = model.forward_features(batch.to(device))  # type: ignore[operator]
            pooled = model.forward_head(features, pre_logits=True)  # type: ignore[operator]  # (B, F)
            chunks.append(pooled.float().cpu())
    return torch.cat(chunks)


@dataclass
class TrainData:
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    num_classes: int


@dataclass
class Trainer:
    model: nn.Module
    groups: list[LayerGroup]
    stages: list[ResolvedStage]
    data: TrainData
    inputs: InputSpec
    spec: TrainingSpec
    progress: ProgressFn
    log_metrics: MetricsFn
    save: SaveFn  # writes a checkpoint of this trainer ("step", "epoch" or "preempt")
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    position: RunPosition = field(default_factory=RunPosition)
    stop_requested: Callable[[], bool] = lambda: False
    optimizer: torch.optim.Optimizer | None = None
    optimizer_spec: OptimizerSpec | None = None
    schedule: StageSchedule | None = None
    ema: ModelEMA | None = None
    early_stopping: EarlyStopping | None = None
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)  # best of the run (the result)
    stage_best_state: dict[str, torch.Tensor] = field(default_factory=dict)  # for early stopping's restore
    step_rng: torch.Generator | None = None
    dist: DistContext = field(default_factory=DistContext)
    forward_model: nn.Module | None = None  # the DDP wrapper when distributed, else the model
    _feature_cache: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)  # (stage, split)
    scaler: torch.amp.GradScaler | None = None
    _clock_started: float | None = None  # perf_counter() at the first stage entry: the budget clock
    trainable_params: list[nn.Parameter] = field(default_factory=list)  # this stage's, set by enter_stage
    _subsets: dict[int, np.ndarray | None] = field(default_factory=dict)  # stage index -> its training subset
    _epoch_started: float | None = None  # perf_counter() when this process began the current epoch
    _validation_seconds: float = 0.0  # one validation pass: the probe's reading, then the last epoch's

    def __post_init__(self) -> None:
        counts = np.bincount(self.data.train[1], minlength=self.data.num_classes)
        self.criterion = build_loss(self.spec.loss, counts)
        self.mixer = MixupCutmix(self.spec.mix, self.data.num_classes)
        self.augment = BatchAugment(self.spec.augment)
        if self.spec.ema.enabled:
            self.ema = ModelEMA(self.model, self.spec.ema.decay)
        if self.spec.precision == "fp16":
            self.scaler = torch.amp.GradScaler(self.device.type)
        self.total_params = sum(p.numel() for p in self.model.parameters())

    # -- stages -----------------------------------------------------------------------------------
    @property
    def rank_batch_size(self) -> int:
        """Per-rank batch: the plan's batch_size is the global batch, split over the ranks."""
        return max(self.spec.batch_size // self.dist.world_size, 1)

    def epoch_order(self) -> torch.Tensor:
        """This rank's sample order for the epoch: a pure function of (seed, epoch), so a resumed
        epoch re-draws it. Distributed runs shard it with torch's DistributedSampler."""
        count, epoch = self.samples_per_epoch(), self.position.global_epoch
        if not self.dist.enabled:
            return torch.randperm(count, generator=epoch_generator(self.spec.seed, epoch))
        sampler: DistributedSampler[int] = DistributedSampler(
            range(count),  # type: ignore[arg-type]  # only len() is used
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            shuffle=True,
            seed=self.spec.seed,
            drop_last=True,
        )
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.int64)

    def current_stage_index(self) -> int:
        """The stage being trained; the last one once every stage has ended (position moves past it)."""
        return min(self.position.stage_index, len(self.stages) - 1)

    def stage_subset(self) -> np.ndarray | None:
        """The current stage's fixed training subset (sorted sample indices), or None: all samples.
        Seeded by (seed, stage index), so a resumed stage draws the same subset."""
        index = self.current_stage_index()
        if index not in self._subsets:  # drawn once per stage: batches_per_epoch() asks often
            stage, count = self.stages[index], len(self.data.train[0])
            subset = None
            if stage.max_samples is not None and stage.max_samples < count:
                generator = epoch_generator(self.spec.seed, -1 - index)
                subset = torch.randperm(count, generator=generator)[: stage.max_samples].sort().values.numpy()
            self._subsets[index] = subset
        return self._subsets[index]

    def samples_per_epoch(self) -> int:
        subset = self.stage_subset()
        return len(self.data.train[0]) if subset is None else len(subset)

    def batches_per_epoch(self) -> int:
        samples = self.samples_per_epoch()
        per_rank = samples // self.dist.world_size if self.dist.enabled else samples
        # Full batches only: a last batch of one sample breaks BatchNorm in training mode.
        count = max(per_rank // self.rank_batch_size, 1)
        return min(count, self.spec.max_train_batches) if self.spec.max_train_batches else count

    def stage_epochs(self) -> int:
        """Epochs of the current stage; the last one is partial when a budget sized the stage."""
        return math.ceil(self.position.stage_steps / self.batches_per_epoch())

    def batches_in_epoch(self) -> int:
        done = self.position.epoch_in_stage * self.batches_per_epoch()
        return min(self.batches_per_epoch(), self.position.stage_steps - done)

    def enter_stage(self, index: int, steps: int | None = None) -> None:
        """Freeze/unfreeze for stage `index`, join new groups to the optimizer, build its schedule.

        Its length: `epochs` x batches per epoch; for a stage sized by seconds, `steps` when loading a
        checkpoint (a budget is never re-measured), else its seconds over the measured step cost."""
        stage = self.stages[index]
        spec = self.spec
        self._start_clock()
        if index == 0 and steps is None:
            self.recalibrate_batchnorm_once()  # before a first stage that caches features or probes its cost
        previous = set(self.stages[index - 1].group_lrs) if index > 0 else set()
        trainable = set(stage.group_lrs)
        set_trainable(self.model, self.groups, trainable)
        affine_lr = min(stage.group_lrs.values())
        affine = self._train_frozen_batchnorm_affine(trainable) if spec.bn_unfreeze == "affine_early" else {}
        optimizer_spec = stage.optimizer or spec.optimizer
        if self.optimizer is None or optimizer_spec != self.optimizer_spec:
            self.optimizer = None  # other optimizer settings: start a new optimizer (its state cannot carry over)
            self.optimizer_spec = optimizer_spec
        for group in self.groups:
            new: list[dict[str, Any]] = []
            if group.name in trainable:
                new = param_groups_for(self.model, group, stage.group_lrs[group.name], optimizer_spec.weight_decay)
            elif group.name in affine:
                new = [{"params": affine[group.name], "lr": affine_lr, "weight_decay": 0.0, "group": group.name}]
            self._join_optimizer(new, optimizer_spec)
        if self.optimizer is None:
            raise ValueError(f"stage {stage.name!r} trains no parameters")
        self.trainable_params = [p for p in self.model.parameters() if p.requires_grad]  # for clipping
        for param_group in self.optimizer.param_groups:  # re-frozen groups keep state but get LR 0
            fallback = affine_lr if param_group["group"] in affine else 0.0
            param_group["lr"] = stage.group_lrs.get(param_group["group"], fallback)
        self.position.stage_steps = self._stage_length(stage, steps)
        self.schedule = StageSchedule(
            stage.scheduler or spec.scheduler,
            self.optimizer,
            self.batches_per_epoch(),
            1,
            stage.warmup_epochs,
            mode=spec.early_stopping.mode,
            total_steps=self.position.stage_steps,
            new_groups=frozenset(trainable - previous) if index > 0 else frozenset(),
        )
        if spec.early_stopping.enabled:
            self.early_stopping = EarlyStopping(spec.early_stopping)
        # DDP registers gradient hooks for the parameters that train when it is built, so every
        # stage gets a new wrapper (its construction also syncs the weights from rank 0).
        self.forward_model = DistributedDataParallel(self.model) if self.dist.enabled else self.model

    def _stage_length(self, stage: ResolvedStage, steps: int | None) -> int:
        if stage.epochs is not None:  # the plan's epochs win, also on resume (a longer plan continues)
            return stage.epochs * self.batches_per_epoch()
        return steps if steps is not None else self._steps_for_budget(stage)

    def _join_optimizer(self, param_groups: list[dict[str, Any]], optimizer_spec: OptimizerSpec) -> None:
        """Add param groups, leaving out tensors the optimizer already holds (BatchNorm affines that
        trained early join once, under their layer group's name, and keep their moments)."""
        held = {id(p) for g in self.optimizer.param_groups for p in g["params"]} if self.optimizer else set()
        for param_group in param_groups:
            params = [p for p in param_group["params"] if id(p) not in held]
            if not params:
                continue
            param_group = {**param_group, "params": params}
            if self.optimizer is None:
                self.optimizer = build_optimizer(optimizer_spec, [param_group])
            else:
                self.optimizer.add_param_group(param_group)

    def _train_frozen_batchnorm_affine(self, trainable: set[str]) -> dict[str, list[nn.Parameter]]:
        """bn_unfreeze: affine_early: BatchNorm weights and biases of frozen groups train (their
        statistics stay frozen in eval mode); returns them per group."""
        params = dict(self.model.named_parameters())
        affine = {}
        for group in self.groups:
            if group.name in trainable:
                continue
            names = batchnorm_affine_names(self.model, group)
            for name in names:
                params[name].requires_grad_(True)
            if names:
                affine[group.name] = [params[name] for name in names]
        return affine

    def _steps_for_budget(self, stage: ResolvedStage) -> int:
        """A wall-clock stage's step count: its seconds (or what the run's budget has left) over the
        measured cost of one step of this stage, with one validation per epoch."""
        if stage.seconds == "rest":
            assert self.spec.budget_seconds is not None  # resolve_stages checked it
            seconds = self.spec.budget_seconds - self.elapsed_seconds()
        else:
            seconds = float(stage.seconds or 0.0)
        images, labels = self.data.train
        bs = self.rank_batch_size
        generator = torch.Generator().manual_seed(self.spec.seed)

        def make_batch() -> tuple[torch.Tensor, torch.Tensor]:
            index = torch.randint(self.samples_per_epoch(), (bs,), generator=generator).sort().values.numpy()
            if stage.cache_features:
                return self.cached_features(stage)[index].to(self.device), torch.as_tensor(labels[index])
            return self.model_input(images[index], generator), torch.as_tensor(labels[index]).to(self.device)

        probe_model = self._head_on_features if stage.cache_features else self.model
        eval_batch = self.model_input(self.data.val[0][: self.spec.eval_batch_size], inputs=self.inputs)
        self.model.train()
        freeze_batchnorm_of_frozen(self.model, self.groups, set(stage.group_lrs))
        with self.autocast():
            cost = probe_step_cost(
                probe_model,
                make_batch,
                self.criterion,
                self.optimizer_spec or self.spec.optimizer,
                math.ceil(len(self.data.val[0]) / self.dist.world_size / self.spec.eval_batch_size),
                eval_batch,
            )
        step_seconds, val_seconds = (v / self.dist.world_size for v in self.dist.sum(*cost.__dict__.values()))
        cost = type(cost)(step_seconds, val_seconds)
        self._validation_seconds = val_seconds
        steps = steps_within(seconds, cost, self.batches_per_epoch())
        self.progress(
            {
                "event": "message",
                "text": f"stage {stage.name}: {seconds:.0f} s of budget -> {steps} steps "
                f"({cost.train_step_seconds * 1000:.0f} ms/step, validation {cost.validation_seconds:.1f} s)",
            }
        )
        return steps

    def _replan_budget(self, stage: ResolvedStage, step_seconds: float, val_seconds: float) -> None:
        """Size the rest of a wall-clock stage from measured step and validation times instead of
        the probe's: at every epoch end, and every `replan_interval()` steps inside an epoch (a
        stage of one or two epochs would otherwise keep the probe's guess to its end; at a 200 s
        budget stages ran 166-229 s on that guess). The probe times 8 steps: a transient load on
        the machine during those 2 s, or a node that speeds up or slows down later, would
        otherwise over- or under-fill the budget for the whole stage."""
        pos = self.position
        step_seconds, val_seconds = (v / self.dist.world_size for v in self.dist.sum(step_seconds, val_seconds))
        if stage.seconds == "rest":
            assert self.spec.budget_seconds is not None
            remaining = self.spec.budget_seconds - self.elapsed_seconds()
        else:
            remaining = float(stage.seconds or 0.0) - pos.stage_seconds - self._epoch_seconds_so_far()
        done = pos.epoch_in_stage * self.batches_per_epoch() + pos.step_in_epoch
        cost = StepCost(step_seconds, val_seconds)
        room = remaining > val_seconds + step_seconds
        more = steps_within(remaining, cost, self.batches_per_epoch(), pos.step_in_epoch) if room else 0
        if pos.step_in_epoch > 0:
            more = max(more, 1)  # the epoch under way still ends with its validation
        planned = pos.stage_steps
        total = done + more  # done >= 1: an epoch ended, or a step of this one was taken
        self._validation_seconds = val_seconds
        if abs(total - planned) <= max(0.02 * planned, 1) or not self._ready()[1].retarget(total):
            return
        pos.stage_steps = total
        where = "the last epoch" if pos.step_in_epoch == 0 else f"{pos.step_in_epoch} steps of this epoch"
        self.progress(
            {
                "event": "message",
                "text": f"stage {stage.name}: re-planned {planned} -> {total} steps from {where} "
                f"({step_seconds * 1000:.0f} ms/step, validation {val_seconds:.1f} s, {remaining:.0f} s left)",
            }
        )

    def replan_interval(self) -> int:
        """Steps between re-plans inside an epoch: an eighth of the planned stage (~100 steps of an
        800-step stage), at least 5 so that one slow step does not steer the plan. A resumed
        epoch re-plans only once it knows the validation cost (the probe did not run)."""
        return max(self.position.stage_steps // 8, 5)

    def _epoch_seconds_so_far(self) -> float:
        started = self._epoch_started
        return time.perf_counter() - started if started is not None else 0.0

    def _start_clock(self) -> None:
        """The budget's clock starts at the first stage entry (or fit) of this process."""
        if self._clock_started is None:
            self._clock_started = time.perf_counter()

    def elapsed_seconds(self) -> float:
        """Training wall clock so far, across resumes."""
        started = self._clock_started
        return self.position.elapsed_seconds + (time.perf_counter() - started if started is not None else 0.0)

    def recalibrate_batchnorm_once(self) -> None:
        """bn_unfreeze: recalibrate: before the first step, re-estimate every BatchNorm's running
        statistics on unaugmented training batches, when the first stage leaves groups frozen.
        Every rank uses the same batches, so the statistics agree without communication."""
        pos, spec = self.position, self.spec
        if pos.bn_recalibrated or pos.global_step > 0 or spec.bn_unfreeze != "recalibrate":
            return
        pos.bn_recalibrated = True
        if set(self.stages[0].group_lrs) == {g.name for g in self.groups}:
            return  # nothing frozen: every BatchNorm updates its own statistics from the first step
        images = self.data.train[0]
        count = min(len(images), spec.bn_recalibration_batches * spec.batch_size)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(spec.seed))[:count]
        index = order.sort().values.numpy()
        batches = (self.model_input(images[index[i : i + spec.batch_size]]) for i in range(0, count, spec.batch_size))
        started = time.perf_counter()
        layers = recalibrate_batchnorm(self.model, batches, self.device)
        self.progress(
            {
                "event": "message",
                "text": f"re-estimated {layers} BatchNorm layers' statistics on {count} training images "
                f"in {time.perf_counter() - started:.1f} s",
            }
        )

    def _ready(self) -> tuple[torch.optim.Optimizer, StageSchedule]:
        if self.optimizer is None or self.schedule is None:
            raise RuntimeError("enter_stage() must run before training steps")
        return self.optimizer, self.schedule

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self) -> None:
        pos = self.position
        self._start_clock()
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
            stop_stage = False
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
                self.enter_stage(pos.stage_index)
                self.stage_best_state = {}

    def run_epoch(self, stage: ResolvedStage) -> bool:
        """One epoch from the current position (mid-epoch after a resume); True when early stopping."""
        pos, spec = self.position, self.spec
        images, labels = self.data.train
        bs = self.rank_batch_size
        order = self.epoch_order()  # positions in the stage's samples; the epoch takes its first batches x bs
        subset = self.stage_subset()
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
        started = self._epoch_started = time.perf_counter()
        steps_before = pos.step_in_epoch
        replan_every = self.replan_interval()
        while pos.step_in_epoch < self.batches_in_epoch():  # a re-plan may lengthen or shorten this epoch
            step = pos.step_in_epoch
            positions = order[step * bs : (step + 1) * bs].sort().values.numpy()
            index = positions if subset is None else subset[positions]
            # Randomness is re-seeded per (step, rank): a resumed run replays it with no saved state.
            self.step_rng = step_generator(spec.seed, pos.global_step, self.dist.rank)
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=self.step_rng)))  # dropout, drop-path
            try:
                if stage.cache_features:
                    loss = self.train_step(None, labels[index], features=self.cached_features(stage)[positions])
                else:
                    loss = self.train_step(images[index], labels[index])
            except _NonFiniteLoss as bad:
                raise TrainingError(
                    f"non-finite loss {bad} in stage {stage.name!r}, epoch {pos.epoch_in_stage + 1}, "
                    f"step {step + 1}; the last good checkpoint is kept"
                ) from None
            loss_sum, seen, stop = self.dist.sum(loss * len(index), float(len(index)), float(self.stop_requested()))
            pos.step_in_epoch += 1
            pos.global_step += 1
            pos.epoch_loss_sum += loss_sum
            pos.epoch_seen += int(seen)
            self.progress({"event": "batch", "batch": pos.step_in_epoch})
            if stop:  # every rank stops at the same step
                self.save(self, "preempt")
                self.dist.barrier()
                raise Preempted(
                    f"SIGTERM in stage {stage.name!r}, epoch {pos.epoch_in_stage + 1}, step "
                    f"{pos.step_in_epoch}: checkpoint written; rerun the same step to resume"
                )
            if spec.checkpoint.every_steps and pos.global_step % spec.checkpoint.every_steps == 0:
                self.save(self, "step")
            taken = pos.step_in_epoch - steps_before
            if stage.epochs is None and taken % replan_every == 0 and self._validation_seconds > 0:
                self._replan_budget(stage, (time.perf_counter() - started) / taken, self._validation_seconds)
        seconds = time.perf_counter() - started
        self._epoch_started = None  # end_epoch adds this epoch's seconds to the stage's
        images_seen = (pos.step_in_epoch - steps_before) * bs * self.dist.world_size
        return self.end_epoch(stage, seconds, images_seen)

    def autocast(self) -> AbstractContextManager[Any]:
        if self.spec.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.spec.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    @functools.cached_property
    def _head_on_features(self) -> nn.Module:
        return _HeadOnFeatures(self.model)

    def cached_features(self, stage: ResolvedStage, split: str = "train") -> torch.Tensor:
        """Pooled backbone features (N, F) of the training split, extracted once per stage.

        While everything below the head is frozen (BatchNorm in eval mode), the backbone is a fixed
        function, so each head epoch only needs the head: timm's forward_features + forward_head(
        pre_logits=True) in eval mode, then dropout and the classifier per step.
        """
        key = (self.position.stage_index, split)
        if key not in self._feature_cache:
            self._feature_cache = {k: v for k, v in self._feature_cache.items() if k[0] == key[0]}
            self.progress({"event": "message", "text": f"stage {stage.name}: caching backbone features of {split}"})
            if split == "train":  # the stage's subset at the stage's size
                subset, inputs = self.stage_subset(), self.stage_inputs()
                images = self.data.train[0] if subset is None else self.data.train[0][subset]
            else:  # validation: every image, at the model's size
                images, inputs = self.data.val[0], self.inputs
            precision = self.spec.feature_precision
            bf16 = precision == "bf16" or (precision == "auto" and native_bf16(self.device))
            self._feature_cache[key] = extract_features(
                self.model, images, inputs, self.spec.eval_batch_size, self.device, bf16
            )
            self.model.train()
            freeze_batchnorm_of_frozen(self.model, self.groups, set(stage.group_lrs))
        return self._feature_cache[key]

    def stage_inputs(self) -> InputSpec:
        """Preprocessing of the current stage's training batches: the model's, at the stage's own
        `input_size` when it sets one (progressive resizing). Validation always uses `self.inputs`."""
        stage = self.stages[self.current_stage_index()]
        if stage.input_size is None or stage.input_size == self.inputs.input_size:
            return self.inputs
        return replace(self.inputs, input_size=stage.input_size)

    def model_input(
        self, images: np.ndarray, augment_with: torch.Generator | None = None, inputs: InputSpec | None = None
    ) -> torch.Tensor:
        """Stored images -> the model's input on its device (B, C, S, S), normalized, at the current
        stage's training size unless `inputs` says otherwise; augmented when a generator is given
        (the probe's batches match the stage's own)."""
        inputs = inputs or self.stage_inputs()
        return self._normalized(self._unit_batch(images, inputs, augment_with), inputs)

    def _unit_batch(self, images: np.ndarray, inputs: InputSpec, augment_with: torch.Generator | None) -> torch.Tensor:
        """Stored images -> (B, C, S, S) in [0, 1] at `inputs.input_size`, augmented when a generator is given."""
        batch = to_unit_images(images, inputs.input_size, inputs.in_chans)
        if augment_with is not None and self.augment.enabled:
            batch = self.augment(batch, augment_with)
        return batch

    def _normalized(self, batch: torch.Tensor, inputs: InputSpec) -> torch.Tensor:
        return normalize(batch, inputs.mean, inputs.std, inputs.channels_last).to(self.device)

    def train_step(self, images: np.ndarray | None, labels: np.ndarray, features: torch.Tensor | None = None) -> float:
        optimizer, schedule = self._ready()
        generator = self.step_rng or step_generator(self.spec.seed, self.position.global_step, self.dist.rank)
        model = self.forward_model or self.model
        if features is not None:  # a cached head stage: dropout + classifier on stored features
            return self._optimize(
                optimizer, schedule, self._head_on_features, features.to(self.device), torch.as_tensor(labels)
            )
        assert images is not None
        inputs = self.stage_inputs()
        batch = self._unit_batch(images, inputs, generator)  # (B, C, S, S) in [0, 1]
        target: torch.Tensor = torch.as_tensor(labels)
        if self.mixer.enabled:  # mixes unit images, before normalization
            batch, target = self.mixer(batch, target, generator)
        return self._optimize(optimizer, schedule, model, self._normalized(batch, inputs), target)

    def _optimize(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: StageSchedule,
        model: nn.Module,
        batch: torch.Tensor,
        target: torch.Tensor,
    ) -> float:
        """Forward, loss, backward, clip, step: one optimizer step; returns the loss."""
        with self.autocast():
            loss = self.criterion(model(batch).float(), target.to(self.device))
        if not torch.isfinite(loss):  # before backward: the weights stay as the last good step left them
            raise _NonFiniteLoss(float(loss))
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(optimizer)
        else:
            loss.backward()
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

    def end_epoch(self, stage: ResolvedStage, seconds: float, seen: int) -> bool:
        pos, spec = self.position, self.spec
        optimizer, schedule = self._ready()
        lr = max(g["lr"] for g in optimizer.param_groups)
        val_started = time.perf_counter()
        val_images, val_labels = self.data.val
        shard = slice(self.dist.rank, None, self.dist.world_size)  # each rank scores its share of val
        if stage.cache_features:  # the backbone is frozen: score the head on cached val features
            head = self.eval_model().get_classifier()  # type: ignore[operator]
            scores = evaluate_head(head, self.cached_features(stage, "val")[shard], val_labels[shard])
        else:
            scores = evaluate(
                self.eval_model(),
                val_images[shard],
                val_labels[shard],
                self.inputs,
                spec.eval_batch_size,
                self.device,
                self.autocast,
            )
        correct, loss_total, count = self.dist.sum(*scores)
        val_accuracy, val_loss = correct / max(count, 1), loss_total / max(count, 1)
        pos.stage_seconds += seconds + time.perf_counter() - val_started
        metrics = {
            "train_loss": pos.epoch_loss_sum / max(pos.epoch_seen, 1),
            "val_accuracy": val_accuracy,
            "val_loss": val_loss,
            "epoch_seconds": seconds,
            "images_per_second": seen / max(seconds, 1e-9),
            "lr_at_epoch_end": lr,
            "stage_index": float(pos.stage_index),
        }
        monitored = metrics.get(spec.early_stopping.monitor, val_accuracy)
        schedule.step_epoch(monitored)
        pos.stage_best = val_accuracy if pos.stage_best is None else max(pos.stage_best, val_accuracy)
        better = pos.best_value is None or (
            monitored > pos.best_value if spec.early_stopping.mode == "max" else monitored < pos.best_value
        )
        pos.next_epoch()
        if stage.epochs is None and pos.epoch_in_stage < self.stage_epochs():
            steps_taken = max(seen // (self.rank_batch_size * self.dist.world_size), 1)
            self._replan_budget(stage, seconds / steps_taken, time.perf_counter() - val_started)
        if better:
            pos.best_value, pos.best_epoch, pos.best_stage = monitored, pos.global_epoch, stage.name
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.eval_model().state_dict().items()})
        stop = self.early_stopping.update(metrics) if self.early_stopping is not None else False
        if self.early_stopping is not None and self.early_stopping.improved:
            self.stage_best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        self.log_metrics(metrics, pos.global_epoch)
        self.progress(
            {
                "event": "epoch_end",
                "stage": stage.name,
                "epoch": pos.epoch_in_stage,
                "epochs": self.stage_epochs(),
                **metrics,
                "improved": better,
            }
        )
        if pos.global_epoch % spec.checkpoint.every_epochs == 0 or stop or pos.epoch_in_stage == self.stage_epochs():
            self.save(self, "epoch")
        return stop

    # -- checkpoint payload -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        optimizer, schedule = self._ready()
        return {
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "early_stopping": self.early_stopping.state_dict() if self.early_stopping is not None else None,
            "best_state": self.best_state,
            "stage_best_state": self.stage_best_state,
            "position": {**self.position.to_dict(), "elapsed_seconds": self.elapsed_seconds()},
            "rng": capture_rng(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint: replay stage entries to rebuild the optimizer's groups, then load."""
        self.position = RunPosition.from_dict(state["position"])
        self.model.load_state_dict(state["model"])
        saved_steps = self.position.stage_steps
        current = self.current_stage_index()
        for index in range(current + 1):
            # Earlier stages are entered only to rebuild the optimizer's groups; their schedules are replaced.
            self.enter_stage(index, steps=saved_steps if index == current else 1)
        optimizer, schedule = self._ready()
        optimizer.load_state_dict(state["optimizer"])
        schedule.restore(state["schedule"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        if self.early_stopping is not None and state["early_stopping"] is not None:
            self.early_stopping.load_state_dict(state["early_stopping"])
        self.best_state = state["best_state"]
        self.stage_best_state = state["stage_best_state"]
        restore_rng(state["rng"])
