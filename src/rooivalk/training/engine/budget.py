"""Stage lengths from a wall-clock budget: time the stage's own training step, then solve for steps.

A stage with `seconds` (or `"rest"` of `training.budget_seconds`) is turned into a fixed number of
optimizer steps when it starts, so its LR schedule knows its length in advance (cosine and STLR
need it) and a resumed run replays the same schedule: the step count is saved in the checkpoint,
never re-measured. The probe trains a throwaway copy of the model, so it changes no weights,
optimizer moments or BatchNorm statistics of the run itself.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rooivalk.plan import OptimizerSpec
from rooivalk.training.engine.optim import build_optimizer

PROBE_WARMUP_STEPS = 3  # first steps allocate buffers and pick kernels: not timed
PROBE_TIMED_STEPS = 8


@dataclass(frozen=True)
class StepCost:
    train_step_seconds: float  # one optimizer step of this stage
    validation_seconds: float  # one pass over the validation split


def probe_step_cost(
    model: nn.Module,
    make_batch: Callable[[], tuple[Any, torch.Tensor]],
    loss_of: Callable[[nn.Module, Any, torch.Tensor], torch.Tensor],
    optimizer_spec: OptimizerSpec,
    validation_batches: int,
    eval_batch: Any,
    forward: Callable[[nn.Module, Any], torch.Tensor],
) -> StepCost:
    """Seconds per training step and per validation pass, measured on a deep copy of `model` (whose
    requires_grad flags and BatchNorm modes are the stage's). `make_batch` gives a training batch
    (inputs, targets) as the stage feeds it, `loss_of(model, inputs, targets)` its training loss as the
    task computes it; `eval_batch` is one validation batch; `forward(model, inputs)` runs the model as its
    task does."""
    probe = copy.deepcopy(model)
    params = [p for p in probe.parameters() if p.requires_grad]
    optimizer = build_optimizer(optimizer_spec, [{"params": params, "lr": 0.0}])
    seconds = 0.0
    for step in range(PROBE_WARMUP_STEPS + PROBE_TIMED_STEPS):
        started = time.perf_counter()  # batch preparation (decode, resize, normalize) is part of a step
        inputs, targets = make_batch()
        loss = loss_of(probe, inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        if step >= PROBE_WARMUP_STEPS:
            seconds += time.perf_counter() - started
    was_training = probe.training
    probe.eval()
    with torch.inference_mode():
        forward(probe, eval_batch)  # warm
        started = time.perf_counter()
        forward(probe, eval_batch)
        eval_seconds = time.perf_counter() - started
    probe.train(was_training)
    return StepCost(seconds / PROBE_TIMED_STEPS, eval_seconds * validation_batches)


def steps_within(seconds: float, cost: StepCost, steps_per_epoch: int, steps_into_epoch: int = 0) -> int:
    """The most optimizer steps whose training plus one validation per (possibly partial) epoch fit
    in `seconds`; at least 1 (a stage always trains), and a stage that fits no validation still
    gets one step. `steps_into_epoch`: steps already taken in the current epoch (a re-plan in the
    middle of one), so the first epoch has only `steps_per_epoch - steps_into_epoch` steps left
    before its validation."""
    best = 1
    for epochs in range(1, 100_000):
        room = seconds - epochs * cost.validation_seconds
        if room <= 0:
            break
        capacity = epochs * steps_per_epoch - steps_into_epoch  # steps up to the end of the epochs-th epoch
        steps = min(capacity, math.floor(room / max(cost.train_step_seconds, 1e-9)))
        if steps <= capacity - steps_per_epoch:
            break  # this many epochs' validations leave no room for a step into the last one
        best = max(best, steps)
        if steps < capacity:
            break
    return best
