"""What a single-model plan's training step returns and writes beside the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rooivalk.models import ModelInfo

HISTORY_FILE = "stages.json"  # the engine's stage summaries, in the model folder


@dataclass
class TrainResult:
    metrics: dict[str, float]
    stages: list[dict[str, Any]]
    artifacts: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    info: ModelInfo | None = None
    resumed_from: str | None = None
    history: list[tuple[dict[str, float], int]] = field(default_factory=list)  # per-epoch metrics

    def to_record(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "stages": self.stages,
            "artifacts": self.artifacts,
            "resumed_from": self.resumed_from,
            "history": self.history,
        }


def stage_metrics(summaries: list[dict[str, Any]]) -> dict[str, float]:
    """`stage_<name>_<figure>` of each stage summary the engine wrote (trainable share, best val accuracy, ...)."""
    metrics: dict[str, float] = {}
    for summary in summaries:
        for key in ("trainable_params", "trainable_share", "best_val_accuracy", "seconds", "epochs"):
            if key in summary:
                metrics[f"stage_{summary['stage']}_{key}"] = summary[key]
    return metrics
