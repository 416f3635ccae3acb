"""The end of an epoch: validate, step the epoch-level schedule, re-plan a time budget, keep the best
state (the run's result) and early stopping's, log the epoch's metrics and checkpoint."""

from __future__ import annotations

import copy
import time

from rooivalk.training.engine.budget_planning import replan_budget
from rooivalk.training.engine.engine_view import EngineView
from rooivalk.training.engine.stages import ResolvedStage


def finish_epoch(trainer: EngineView, stage: ResolvedStage, seconds: float, seen: int, lr: float) -> bool:
    """`seconds` of training over `seen` samples just ended an epoch at learning rate `lr` (the highest
    of the param groups); True when early stopping says to stop."""
    pos, spec = trainer.position, trainer.spec
    schedule = trainer.schedule_ready()
    val_started = time.perf_counter()
    score, val_loss = trainer.validate(stage)
    pos.stage_seconds += seconds + time.perf_counter() - val_started
    task = trainer.task
    metrics = {
        "train_loss": pos.epoch_loss_sum / max(pos.epoch_seen, 1),
        # the terms of a composite loss: distillation's train_kd_loss and train_hard_loss
        **{f"train_{name}": total / max(pos.epoch_seen, 1) for name, total in pos.epoch_term_sums.items()},
        task.score_name: score,  # val_accuracy; a detector's val_map50
        **({"val_loss": val_loss} if task.has_val_loss else {}),
        **task.validation_metrics(),
        "epoch_seconds": seconds,
        "samples_per_second": seen / max(seconds, 1e-9),
        "lr_at_epoch_end": lr,
        "stage_index": float(pos.stage_index),
    }
    monitored = metrics[spec.early_stopping.monitor]
    schedule.step_epoch(monitored)
    pos.stage_best = score if pos.stage_best is None else max(pos.stage_best, score)
    better = pos.best_value is None or (
        monitored > pos.best_value if spec.early_stopping.mode == "max" else monitored < pos.best_value
    )
    pos.next_epoch()
    if stage.epochs is None and pos.epoch_in_stage < trainer.stage_epochs():
        steps_taken = max(seen // (trainer.rank_batch_size * trainer.dist.world_size), 1)
        replan_budget(trainer, stage, seconds / steps_taken, time.perf_counter() - val_started)
    if better:
        pos.best_value, pos.best_epoch, pos.best_stage = monitored, pos.global_epoch, stage.name
        trainer.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in trainer.eval_model().state_dict().items()})
    stop = trainer.early_stopping.update(metrics) if trainer.early_stopping is not None else False
    pos.stage_stopped = stop  # saved below: a run resumed from this checkpoint does not train the stage on
    if trainer.early_stopping is not None and trainer.early_stopping.improved:
        trainer.stage_best_state = copy.deepcopy({k: v.detach().cpu() for k, v in trainer.model.state_dict().items()})
    trainer.log_metrics(metrics, pos.global_epoch)
    trainer.progress(
        {
            "event": "epoch_end",
            "stage": stage.name,
            "epoch": pos.epoch_in_stage,
            "global_epoch": pos.global_epoch,  # counted across stages and resumes (a search's pruning step)
            "epochs": trainer.stage_epochs(),
            **metrics,
            "improved": better,
        }
    )
    if pos.global_epoch % spec.checkpoint.every_epochs == 0 or stop or pos.epoch_in_stage == trainer.stage_epochs():
        trainer.save("epoch")
    return stop
