"""The engine's checkpointer: what a checkpoint of a Trainer holds, and resuming from the newest good one.

Every training step (a single-model plan's `train_model`, each sensor's model, the fusion model)
writes through one `RunCheckpointer` to a CheckpointStore (local folder or s3:// prefix). A rerun
with the same checkpoint URI resumes exactly where the newest verified checkpoint left off; a
checkpoint of another model is refused naming the tensors that changed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rooivalk.training.checkpoint import CheckpointStore, check_signature, model_signature

if TYPE_CHECKING:
    from rooivalk.training.loop import ProgressFn, Trainer

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
