"""Training: stages of progressive unfreezing with per-group learning rates."""

from rooivalk.training.errors import Preempted, TrainingError
from rooivalk.training.trainer import TrainResult, train_model

__all__ = ["Preempted", "TrainResult", "TrainingError", "train_model"]
