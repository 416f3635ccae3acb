"""What the per-model key checks read of a plan: its training sections, their tasks and metrics.

rooivalk.plan.techniques (which keys a section may set) and rooivalk.plan.compression_rules (the
compression and distillation keys' rules) judge a `ModelTraining` by its `Rule`s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from rooivalk.plan.training import TrainingSpec


class ModelView(Protocol):
    """What the check reads of a plan's model section (rooivalk.plan.ModelSpec)."""

    @property
    def family(self) -> str: ...
    @property
    def pretrained(self) -> str | None: ...


class PlanView(Protocol):
    """What the check reads of a plan (rooivalk.plan.Plan); a Protocol, so that rooivalk.plan, which runs
    the check, is the only one of the two modules that imports the other."""

    @property
    def model(self) -> Any: ...
    @property
    def sensors(self) -> dict[str, Any] | None: ...
    @property
    def fusion(self) -> Any: ...
    @property
    def training(self) -> TrainingSpec: ...
    @property
    def retraining(self) -> Any: ...


# A model family outside BUILTIN_TASKS (a plugin) -> (its task, whether that task takes image batches).
# Layers above the plan supply it (rooivalk.training.tasks.plugin_task_info): resolving a plugin loads it.
PluginResolver = Callable[[str], tuple[str, bool]]

BUILTIN_TASKS: dict[str, str] = {
    "timm": "image",
    "rf_cnn_transformer": "tensor",
    "radar_sequence": "tensor",
    "acoustic_crepe": "tensor",
    "rnn": "sequence",
    "mlp": "table",
    "detector": "detection",
}
ARRAY_TASKS = ("sequence", "table")  # models of data.format sequences / table
FUSION_TASK = "fusion"
# The metrics the engine logs after every epoch, and the direction each improves in.
MONITORED_METRICS: dict[str, str] = {"val_accuracy": "max", "val_loss": "min", "train_loss": "min"}
# A detector's validation is scored by mAP and its operating point (rooivalk.training.tasks.detection).
DETECTION_TASK = "detection"
DETECTION_MONITORED_METRICS: dict[str, str] = {
    "val_map50": "max",
    "val_map": "max",
    "val_f1": "max",
    "val_recall": "max",
    "val_precision": "max",
    "train_loss": "min",
}
MULTI_SENSOR_TOP_LEVEL = (
    "a multi-sensor plan's models train by sensors.<name>.training and fusion.training; "
    "the top-level training section applies to single-model plans"
)

Problem = tuple[str, str]  # (key path, reason)


@dataclass(frozen=True)
class ModelTraining:
    """One training section and what it trains."""

    path: str  # "training", "sensors.rf.training", "fusion.training"
    model_path: str  # "model", "sensors.rf.model", "fusion"
    family: str  # the model family; "fusion" for the fusion section
    task: str
    pretrained: bool
    in_pipeline: bool  # a step of the multi-sensor pipeline (one process)
    training: TrainingSpec
    default: TrainingSpec  # the section's default: a key is set when it differs from it
    warm_start: bool = False  # retraining runs start from the champion's weights (retraining.warm_start)

    @property
    def staged(self) -> bool:
        return bool(self.training.stages)

    @property
    def from_scratch(self) -> str:
        if self.task == FUSION_TASK:
            return "the fusion model trains from scratch"
        return f"{self.family} trains from scratch ({self.model_path}.pretrained is null)"


Rule = Callable[[ModelTraining], str | None]
