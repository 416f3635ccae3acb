"""The engine's checkpointer: what a checkpoint of a Trainer holds, and resuming from the newest good one.

Every training step (a single-model plan's `train_model`, each sensor's model, the fusion model)
writes through one `RunCheckpointer` to a CheckpointStore (local folder or s3:// prefix). A rerun
with the same checkpoint URI resumes exactly where the newest verified checkpoint left off; a
checkpoint of another model is refused naming the tensors that changed.
"""

from __future__ import annotations

import logging
from typing import Any

from rooivalk.events import ProgressFn
from rooivalk.training.engine.checkpoint import CheckpointStore, check_signature, model_signature
from rooivalk.training.engine.engine_view import EngineView as Trainer
from rooivalk.training.engine.state import RunPosition, capture_rng, restore_rng

log = logging.getLogger(__name__)


class RunCheckpointer:
    """Saves a Trainer's full state (rank 0 only) with the model's signature and the plan's digest."""

    def __init__(self, store: CheckpointStore, plan_digest: str, is_main: bool = True) -> None:
        self.store = store
        self.plan_digest = plan_digest
        self.is_main = is_main

    def save(self, trainer: Trainer, reason: str) -> None:
        if not self.is_main:
            return
        pos = trainer.position
        state = {**trainer.state_dict(), "signature": model_signature(trainer.model), "plan_digest": self.plan_digest}
        info = {
            "reason": reason,
            "stage_index": pos.stage_index,
            "epoch_in_stage": pos.epoch_in_stage,
            "step_in_epoch": pos.step_in_epoch,
            "best_value": pos.best_value,
        }
        self.store.save(state, pos.global_step, info)
        if reason == "epoch" and pos.best_epoch == pos.global_epoch:
            self.store.save_best(trainer.best_state, {"epoch": pos.best_epoch, "value": pos.best_value})

    def resume(self, trainer: Trainer, progress: ProgressFn | None = None) -> str | None:
        """Load the newest verified checkpoint into `trainer`; where it came from, or None (a fresh start)."""
        loaded = self.store.load_latest()
        if loaded is not None and loaded.skipped and progress is not None:
            progress({"event": "message", "text": f"{self.store.uri}: skipped unusable checkpoints {loaded.skipped}"})
        if loaded is None:
            return None
        check_signature(loaded.state["signature"], model_signature(trainer.model), self.store.uri)
        trainer.load_state_dict(loaded.state)
        pos = trainer.position
        where = (
            f"{self.store.uri}/{loaded.entry['file']} "
            f"(stage {pos.stage_index}, epoch {pos.epoch_in_stage}, step {pos.step_in_epoch})"
        )
        log.info("resuming from %s", where)
        if progress is not None:
            progress({"event": "message", "text": f"resumed from {where}"})
        return where


def trainer_state(trainer: Trainer) -> dict[str, Any]:
    """A checkpoint's payload: every piece of a Trainer that changes during training."""
    optimizer, schedule = trainer.optimizer, trainer.schedule
    if optimizer is None or schedule is None:
        raise RuntimeError("no stage entered: nothing to checkpoint")
    return {
        "model": trainer.model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
        "ema": trainer.ema.state_dict() if trainer.ema is not None else None,
        "early_stopping": trainer.early_stopping.state_dict() if trainer.early_stopping is not None else None,
        "best_state": trainer.best_state,
        "stage_best_state": trainer.stage_best_state,
        "position": {**trainer.position.to_dict(), "elapsed_seconds": trainer.elapsed_seconds()},
        "rng": capture_rng(),
    }


def restore_trainer(trainer: Trainer, state: dict[str, Any]) -> None:
    """Load a checkpoint's payload: replay stage entries to rebuild the optimizer's groups, then load."""
    trainer.position = RunPosition.from_dict(state["position"])
    trainer.model.load_state_dict(state["model"])
    saved_steps = trainer.position.stage_steps
    current = trainer.current_stage_index()
    for index in range(current + 1):
        # Earlier stages are entered only to rebuild the optimizer's groups; their schedules are replaced.
        trainer.enter_stage(index, steps=saved_steps if index == current else 1)
    assert trainer.optimizer is not None  # enter_stage built it
    assert trainer.schedule is not None
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.schedule.restore(state["schedule"])
    if trainer.scaler is not None and state["scaler"] is not None:
        trainer.scaler.load_state_dict(state["scaler"])
    if trainer.ema is not None and state["ema"] is not None:
        trainer.ema.load_state_dict(state["ema"])
    if trainer.early_stopping is not None and state["early_stopping"] is not None:
        trainer.early_stopping.load_state_dict(state["early_stopping"])
    trainer.best_state = state["best_state"]
    trainer.stage_best_state = state["stage_best_state"]
    restore_rng(state["rng"])
