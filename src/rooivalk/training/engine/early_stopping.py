"""Early stopping on one validation metric, with state that checkpoints as plain Python types."""

from __future__ import annotations

import math
from typing import Any

from rooivalk.plan import EarlyStoppingSpec


class EarlyStopping:
    """Tracks the best value of `spec.monitor`; `update` says whether to stop.

    An epoch improves when it beats the best by more than `min_delta` (a NaN never does). Training
    stops after `patience` epochs in a row without improvement. With `spec.enabled` false the best is
    still tracked (to restore the best weights) but `update` never asks to stop.
    """

    def __init__(self, spec: EarlyStoppingSpec) -> None:
        self.spec = spec
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.improved = False
        self.bad_epochs = 0
        self.epochs_seen = 0

    def update(self, metrics: dict[str, float], epoch: int | None = None) -> bool:
        """Record one epoch's validation metrics (`epoch` defaults to the count of updates so far)."""
        if self.spec.monitor not in metrics:
            raise KeyError(
                f"early stopping monitors {self.spec.monitor!r}, which the validation metrics lack; "
                f"available: {sorted(metrics)}"
            )
        value = float(metrics[self.spec.monitor])
        epoch = self.epochs_seen if epoch is None else epoch
        self.epochs_seen += 1
        self.improved = self._is_better(value)
        if self.improved:
            self.best_value, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return self.spec.enabled and self.bad_epochs >= self.spec.patience

    def _is_better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best_value is None:
            return True
        if self.spec.mode == "max":
            return value > self.best_value + self.spec.min_delta
        return value < self.best_value - self.spec.min_delta

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "improved": self.improved,
            "bad_epochs": self.bad_epochs,
            "epochs_seen": self.epochs_seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value = None if state["best_value"] is None else float(state["best_value"])
        self.best_epoch = None if state["best_epoch"] is None else int(state["best_epoch"])
        self.improved = bool(state["improved"])
        self.bad_epochs = int(state["bad_epochs"])
        self.epochs_seen = int(state["epochs_seen"])
