"""Training: the one engine (engine/), the tasks it trains (tasks/), and the entry points of each model
kind: `train_model` (a single-model plan), sensor_training, fusion_training, system_training."""

from rooivalk.training.engine.errors import Preempted, TrainingError
from rooivalk.training.results import TrainResult
from rooivalk.training.trainer import train_model

__all__ = ["Preempted", "TrainResult", "TrainingError", "train_model"]
