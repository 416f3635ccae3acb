"""Wall-clock stages for the engine: the step plan of a stage sized in seconds, and its re-plans.

A stage with `seconds` (or `"rest"` of `training.budget_seconds`) gets a step count when it starts,
from a timed probe of its own training step (rooivalk.training.engine.budget). Without
`training.deterministic`, the rest of the stage is re-sized from measured step and validation times
as it runs (a noisy probe or a node that changes speed would otherwise over- or under-fill the
budget). With `deterministic: true` the first plan is final: it is saved in a checkpoint at once and
a resumed run takes exactly the same steps, so it ends bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from rooivalk.training.engine.budget import StepCost, probe_step_cost, steps_within
from rooivalk.training.engine.engine_view import EngineView as Trainer
from rooivalk.training.engine.freezing import freeze_batchnorm_of_frozen
from rooivalk.training.engine.stages import ResolvedStage


def _call(model: torch.nn.Module, inputs: Any) -> torch.Tensor:
    return model(inputs)  # type: ignore[no-any-return]


def stage_seconds(trainer: Trainer, stage: ResolvedStage) -> float:
    if stage.seconds == "rest":
        assert trainer.spec.budget_seconds is not None  # resolve_stages checked it
        return trainer.spec.budget_seconds - trainer.elapsed_seconds()
    return float(stage.seconds or 0.0)


def steps_for_budget(trainer: Trainer, stage: ResolvedStage) -> int:
    """A wall-clock stage's step count: its seconds (or what the run's budget has left) over the
    measured cost of one step of this stage, with one validation per epoch."""
    seconds = stage_seconds(trainer, stage)
    task, spec, dist = trainer.task, trainer.spec, trainer.dist
    generator = torch.Generator().manual_seed(spec.seed)

    def make_batch() -> tuple[Any, torch.Tensor]:
        index = torch.randint(trainer.samples_per_epoch(), (trainer.rank_batch_size,), generator=generator)
        positions = index.sort().values.numpy()
        if stage.cache_features:
            labels = torch.as_tensor(task.train_labels[trainer.stage_rows(positions)])
            return trainer.cached_features(stage)[positions].to(trainer.device), labels.to(trainer.device)
        return task.train_batch(trainer.stage_rows(positions), stage, generator, trainer.device)

    eval_batch: Any
    criterion = trainer.criterion
    if stage.cache_features:  # the head alone, on stored features
        probe_model, forward = trainer.head_on_features, _call

        def loss_of(model: nn.Module, inputs: Any, target: torch.Tensor) -> torch.Tensor:
            return criterion(model(inputs).float(), target)  # type: ignore[no-any-return]

        eval_batch = trainer.cached_features(stage, "val")[: spec.eval_batch_size].to(trainer.device)
    else:
        probe_model, forward = trainer.model, task.forward

        def loss_of(model: nn.Module, inputs: Any, target: torch.Tensor) -> torch.Tensor:
            return task.training_loss(model, inputs, target, criterion)

        eval_batch = task.eval_batch(spec.eval_batch_size, trainer.device)
    trainer.model.train()
    freeze_batchnorm_of_frozen(trainer.model, trainer.groups, set(stage.group_lrs))
    with trainer.autocast():
        cost = probe_step_cost(
            probe_model,
            make_batch,
            loss_of,
            trainer.optimizer_spec or spec.optimizer,
            math.ceil(len(task.val_labels) / dist.world_size / spec.eval_batch_size),
            eval_batch,
            forward,
        )
    step_seconds, val_seconds = (v / dist.world_size for v in dist.sum(*cost.__dict__.values()))
    cost = StepCost(step_seconds, val_seconds)
    trainer.clock.validation_seconds = val_seconds
    steps = steps_within(seconds, cost, trainer.batches_per_epoch())
    trainer.progress(
        {
            "event": "message",
            "text": f"stage {stage.name}: {seconds:.0f} s of budget -> {steps} steps "
            f"({cost.train_step_seconds * 1000:.0f} ms/step, validation {cost.validation_seconds:.1f} s)",
        }
    )
    return steps


def replan_interval(trainer: Trainer) -> int:
    """Steps between re-plans inside an epoch: an eighth of the planned stage (~100 steps of an
    800-step stage), at least 5 so that one slow step does not steer the plan. A resumed
    epoch re-plans only once it knows the validation cost (the probe did not run)."""
    return max(trainer.position.stage_steps // 8, 5)


def replan_budget(trainer: Trainer, stage: ResolvedStage, step_seconds: float, val_seconds: float) -> None:
    """Size the rest of a wall-clock stage from measured step and validation times instead of the
    probe's: at every epoch end, and every `replan_interval()` steps inside an epoch (a stage of one
    or two epochs would otherwise keep the probe's guess to its end; at a 200 s budget stages ran
    166-229 s on that guess). Never with `training.deterministic`: the first plan stays."""
    if trainer.spec.deterministic:
        return
    pos, dist = trainer.position, trainer.dist
    step_seconds, val_seconds = (v / dist.world_size for v in dist.sum(step_seconds, val_seconds))
    if stage.seconds == "rest":
        remaining = stage_seconds(trainer, stage)
    else:
        remaining = float(stage.seconds or 0.0) - pos.stage_seconds - trainer.clock.epoch_so_far()
    done = pos.epoch_in_stage * trainer.batches_per_epoch() + pos.step_in_epoch
    cost = StepCost(step_seconds, val_seconds)
    room = remaining > val_seconds + step_seconds
    more = steps_within(remaining, cost, trainer.batches_per_epoch(), pos.step_in_epoch) if room else 0
    if pos.step_in_epoch > 0:
        more = max(more, 1)  # the epoch under way still ends with its validation
    planned = pos.stage_steps
    total = done + more  # done >= 1: an epoch ended, or a step of this one was taken
    trainer.clock.validation_seconds = val_seconds
    if abs(total - planned) <= max(0.02 * planned, 1) or not trainer.schedule_ready().retarget(total):
        return
    pos.stage_steps = total
    where = "the last epoch" if pos.step_in_epoch == 0 else f"{pos.step_in_epoch} steps of this epoch"
    trainer.progress(
        {
            "event": "message",
            "text": f"stage {stage.name}: re-planned {planned} -> {total} steps from {where} "
            f"({step_seconds * 1000:.0f} ms/step, validation {val_seconds:.1f} s, {remaining:.0f} s left)",
        }
    )
