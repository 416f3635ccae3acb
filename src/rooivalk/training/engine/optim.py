"""Optimizers and per-stage LR schedules, built from the plan with torch's own classes.

A stage's schedule wraps one torch scheduler behind a uniform interface (`step_batch` after each
optimizer step, `step_epoch` after each validation) so the loop never branches on the schedule's
kind. Each stage builds a fresh `StageSchedule` on the same (or a grown) optimizer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import torch
from torch.optim import lr_scheduler

from rooivalk.plan import OptimizerSpec, SchedulerSpec

WARMUP_START_FACTOR = 0.01


log = logging.getLogger(__name__)


# Device types with fused Adam/AdamW/SGD kernels in torch 2.13 that this project runs on.
FUSED_DEVICE_TYPES = frozenset({"cpu", "cuda"})


def can_fuse(param_groups: list[dict[str, Any]]) -> bool:
    """Whether torch's fused update takes these parameters: float tensors on CPU or CUDA.

    Groups added later (a stage unfreezing more groups) must qualify too, which holds because a
    model's parameters share one device and dtype family.
    """
    params = [p for group in param_groups for p in group["params"]]
    return all(p.device.type in FUSED_DEVICE_TYPES and torch.is_floating_point(p) for p in params)


def build_optimizer(spec: OptimizerSpec, param_groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """The plan's optimizer over param groups that carry "params" and "lr".

    A group's own "weight_decay" wins over `spec.weight_decay` (biases and norms usually get 0);
    extra keys such as "group" (the layer group's name) are kept by torch as they are. The fused
    update replaces foreach's chain of per-op kernels over all tensors by one pass (on 2 CPU cores
    an AdamW update over EfficientNet-Lite0's 3.4M parameters: 2.3 ms fused, 6.8 ms foreach;
    benchmarks/optimizer_step.py).
    """
    if not param_groups:
        raise ValueError("build_optimizer needs at least one param group")
    missing = [index for index, group in enumerate(param_groups) if "lr" not in group]
    if missing:
        raise ValueError(f"param groups {missing} have no 'lr'; every group carries its own learning rate")
    groups = [{**group, "weight_decay": group.get("weight_decay", spec.weight_decay)} for group in param_groups]
    fused = True if spec.fused and can_fuse(groups) else None  # None: torch's default (foreach)
    if spec.name == "adamw":
        return torch.optim.AdamW(groups, betas=spec.betas, weight_decay=spec.weight_decay, fused=fused)
    if spec.name == "adam":
        return torch.optim.Adam(groups, betas=spec.betas, weight_decay=spec.weight_decay, fused=fused)
    if spec.name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=groups[0]["lr"],
            momentum=spec.momentum,
            nesterov=spec.nesterov,
            weight_decay=spec.weight_decay,
            fused=fused,
        )
    raise ValueError(f"unknown optimizer {spec.name!r}")


def paced_position(step: float, since: float, origin: float, rate: float) -> float:
    """Where on its curve a factor reads at optimizer step `step`: the step itself until `since`,
    then `origin + (step - since) * rate`. A re-planned budget stage changes the rate from the
    current step on, so the LR continues from its current value along the same curve at a new pace
    instead of jumping to where a curve of the new length would be (a cosine re-planned from 2300
    to 3100 steps after a 900-step epoch would lift the LR from 0.67x to 0.80x of its base at once).
    Plain float fields on the factors, not an object: LambdaLR checkpoints their __dict__ and
    checkpoints load with weights_only=True."""
    return step if step < since else origin + (step - since) * rate


@dataclass(frozen=True)
class CosineFactor:
    """LR multiplier of step t: a linear warmup from WARMUP_START_FACTOR over `warmup` steps, then
    half a cosine from 1 down to `min_ratio` until `steps`, then flat.

    A callable class rather than a lambda so LambdaLR.state_dict() can save it (it stores __dict__),
    and a ratio rather than CosineAnnealingLR's absolute eta_min so every group ends at its own
    min_lr_ratio x base LR. One instance per param group: groups unfrozen by this stage get a longer
    warmup than groups that were already training.
    """

    steps: int
    min_ratio: float
    warmup: int = 0
    since: float = 0.0  # the pace (see paced_position); identity until a re-plan
    origin: float = 0.0
    rate: float = 1.0

    def __call__(self, step: int) -> float:
        at = paced_position(step, self.since, self.origin, self.rate)
        if at < self.warmup:
            return WARMUP_START_FACTOR + (1.0 - WARMUP_START_FACTOR) * at / self.warmup
        progress = min(max(at - self.warmup, 0), self.steps - self.warmup) / max(self.steps - self.warmup, 1)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class SlantedTriangularFactor:
    """ULMFiT's slanted triangular LR (Howard & Ruder 2018, eq. 3) as a multiplier of the base LR:
    a linear rise over `cut_fraction` of `steps`, then a linear fall; lowest value 1 / `ratio`.
    A group unfrozen by this stage first ramps from WARMUP_START_FACTOR over `warmup` steps."""

    steps: int
    cut_fraction: float
    ratio: float
    warmup: int = 0
    since: float = 0.0  # the pace (see paced_position); identity until a re-plan
    origin: float = 0.0
    rate: float = 1.0

    def __call__(self, step: int) -> float:
        at = paced_position(step, self.since, self.origin, self.rate)
        t = min(max(at, 0), self.steps)
        cut = max(math.floor(self.steps * self.cut_fraction), 1)
        p = t / cut if t < cut else 1 - (t - cut) / max(cut * (1 / self.cut_fraction - 1), 1)
        factor = (1 + max(p, 0.0) * (self.ratio - 1)) / self.ratio
        if at < self.warmup:
            factor *= WARMUP_START_FACTOR + (1.0 - WARMUP_START_FACTOR) * at / self.warmup
        return factor


class StageSchedule:
    """One stage's LR schedule over `steps_per_epoch * epochs` optimizer steps.

    Call after setting every group's "lr" to this stage's base LR: each group's "initial_lr" is reset
    to it, because torch's schedulers only `setdefault` it and would otherwise keep the previous
    stage's value (or miss groups added by `add_param_group` since).
    """

    def __init__(
        self,
        spec: SchedulerSpec,
        optimizer: torch.optim.Optimizer,
        steps_per_epoch: int,
        epochs: int,
        warmup_epochs: float | None = None,
        mode: Literal["max", "min"] = "max",
        total_steps: int | None = None,
        new_groups: frozenset[str] = frozenset(),
    ) -> None:
        """`total_steps` overrides steps_per_epoch x epochs (a stage sized by wall clock); param groups
        whose "group" is in `new_groups` were unfrozen by this stage and get the new-group warmup."""
        if steps_per_epoch < 1 or epochs < 1 or (total_steps is not None and total_steps < 1):
            raise ValueError(
                f"a stage needs steps_per_epoch >= 1 and epochs >= 1, got {steps_per_epoch}, {epochs}, {total_steps}"
            )
        self.spec = spec
        self.optimizer = optimizer
        self.total_steps = total_steps if total_steps is not None else steps_per_epoch * epochs
        self.new_groups = new_groups
        self.steps = 0
        for group in optimizer.param_groups:
            group["initial_lr"] = group["lr"]
        self._steps_per_epoch, self._warmup_epochs = steps_per_epoch, warmup_epochs
        self.warmup_steps = self._warmup_steps(steps_per_epoch, warmup_epochs)
        self._per_batch: lr_scheduler.LRScheduler | None = None
        self._plateau: lr_scheduler.ReduceLROnPlateau | None = None
        if spec.name in ("cosine", "slanted_triangular"):
            self._per_batch = lr_scheduler.LambdaLR(optimizer, self._group_factors())
        elif spec.name == "onecycle":
            self._per_batch = lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=[group["lr"] for group in optimizer.param_groups],
                total_steps=self.total_steps,
                pct_start=spec.pct_start,
            )
        elif spec.name == "cosine_restarts":
            # Stepped per batch, so T_0 is in steps; eta_min is 0 (an absolute floor fits no multi-LR stage).
            self._per_batch = lr_scheduler.CosineAnnealingWarmRestarts(
                optimizer, T_0=spec.restart_epochs * steps_per_epoch, T_mult=spec.restart_mult
            )
        elif spec.name == "plateau":
            self._plateau = lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=mode, factor=spec.factor, patience=spec.patience, min_lr=spec.min_lr
            )
        elif spec.name != "constant":
            raise ValueError(f"unknown scheduler {spec.name!r}")

    def _warmup_steps(self, steps_per_epoch: int, warmup_epochs: float | None) -> int:
        if self.spec.name != "cosine":
            return 0  # slanted_triangular's rise is its warmup
        # The stage's own warmup overrides the scheduler's epochs, which override the fraction.
        epochs = warmup_epochs if warmup_epochs is not None else self.spec.warmup_epochs
        steps = epochs * steps_per_epoch if epochs is not None else self.spec.warmup_fraction * self.total_steps
        # At least one cosine step must remain after the warmup.
        return min(round(steps), self.total_steps - 1)

    def _group_factors(self) -> list[Any]:
        """One LR multiplier per param group; a group new in this stage warms up over
        new_group_warmup_fraction of the stage (its moments start from zero, and its pretrained
        weights take the largest gradients right after unfreezing)."""
        new_warmup = min(round(self.spec.new_group_warmup_fraction * self.total_steps), self.total_steps - 1)
        factors: list[Any] = []
        for group in self.optimizer.param_groups:
            is_new = group.get("group") in self.new_groups
            if self.spec.name == "slanted_triangular":
                warmup = new_warmup if is_new else 0
                factors.append(
                    SlantedTriangularFactor(self.total_steps, self.spec.cut_fraction, self.spec.stlr_ratio, warmup)
                )
            else:
                warmup = max(self.warmup_steps, new_warmup) if is_new else self.warmup_steps
                factors.append(CosineFactor(self.total_steps, self.spec.min_lr_ratio, warmup))
        return factors

    def retarget(self, total_steps: int) -> bool:
        """Stretch or shrink the stage to `total_steps` from the current step on (a budget re-planned
        at an epoch end). Cosine and slanted-triangular factors keep their curve and change the pace
        at which the remaining steps walk it (see paced_position): the LR is continuous at the re-plan and
        reaches the curve's end at the new last step. OneCycleLR fixes its length at construction,
        so a one-cycle stage keeps its planned length (returns False)."""
        if self.spec.name == "onecycle":
            return False
        self.total_steps = max(total_steps, 1)
        if isinstance(self._per_batch, lr_scheduler.LambdaLR):
            now = self.steps  # == LambdaLR.last_epoch: the LR of this step is already set
            self._per_batch.lr_lambdas = [
                _repaced(factor, now, self.total_steps)  # type: ignore[type-var]  # _group_factors built them
                for factor in self._per_batch.lr_lambdas
            ]
        return True

    @property
    def lrs(self) -> list[float]:
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def step_batch(self) -> None:
        """After each optimizer step. Past the stage's last step the LR stays put (OneCycleLR would raise)."""
        if self._per_batch is None or self.steps >= self.total_steps:
            return
        self.steps += 1
        if self.spec.name == "onecycle" and self.steps >= self.total_steps:
            return  # OneCycleLR's schedule has total_steps points: the initial one and total_steps - 1 steps
        self._per_batch.step()

    def step_epoch(self, metric: float | None) -> None:
        """After each epoch's validation; only the plateau schedule reads the monitored metric."""
        if self._plateau is None:
            return
        if metric is None:
            raise ValueError("the plateau schedule needs the monitored validation metric after every epoch")
        self._plateau.step(metric)

    def state_dict(self) -> dict[str, Any]:
        scheduler = self._per_batch or self._plateau
        return {
            "name": self.spec.name,
            "steps": self.steps,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["name"] != self.spec.name:
            raise ValueError(f"checkpoint holds a {state['name']!r} schedule, this stage uses {self.spec.name!r}")
        self.steps = int(state["steps"])
        scheduler = self._per_batch or self._plateau
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])

    def restore(self, state: dict[str, Any]) -> bool:
        """load_state_dict, or, when the plan changed this stage's schedule or length since the
        checkpoint, replay the saved number of steps on this schedule. Returns False on a replay."""
        try:
            self.load_state_dict(state)
            return True
        except (KeyError, ValueError) as error:
            steps = int(state.get("steps", 0))
            log.warning(
                "the stage's schedule changed since the checkpoint (%s); replaying %d steps of the new one",
                error,
                steps,
            )
            for _ in range(steps):
                self.step_batch()
            return False


Factor = TypeVar("Factor", CosineFactor, SlantedTriangularFactor)


def _repaced(factor: Factor, now: int, total_steps: int) -> Factor:
    """`factor` walking from where it reads at step `now` to its curve's end at `total_steps`."""
    origin = paced_position(now, factor.since, factor.origin, factor.rate)
    rate = max(factor.steps - origin, 0.0) / max(total_steps - now, 1)
    return replace(factor, since=float(now), origin=origin, rate=rate)
