"""What a training task tells the engine: how batches are made, how the model runs, how it is scored.

The engine (rooivalk.training.engine.loop) knows nothing of images, signals or sensors. It draws sample
indices, asks the task for a batch on the device, runs `task.forward`, applies the plan's loss,
and asks the task to score the validation split. A task also says what may be cached: a
frozen-prefix feature cache for head-only stages (`can_cache_features`), and which techniques of
the plan apply to its inputs (augmentation and Mixup/CutMix belong to images; rooivalk.plan.techniques
refuses the rest at validation).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from rooivalk.data.dataset import Dataset
from rooivalk.plan import Plan
from rooivalk.training.engine.stages import ResolvedStage

# A model input on its device: one tensor (images, IQ, tracks), or named tensors (fusion's
# per-sensor embeddings and presence mask).
Inputs = torch.Tensor | dict[str, torch.Tensor]
Autocast = Callable[[], AbstractContextManager[Any]]


def to_device(inputs: Inputs, device: torch.device) -> Inputs:
    if isinstance(inputs, dict):
        return {name: tensor.to(device) for name, tensor in inputs.items()}
    return inputs.to(device)


def score_logits(logits: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """(correct predictions, summed cross-entropy) of one batch: sums, so ranks and batches add."""
    logits = logits.float()
    loss_sum = float(nn.functional.cross_entropy(logits, target, reduction="sum"))
    return float((logits.argmax(1) == target).sum()), loss_sum


class Task(ABC):
    """One kind of supervised input (classification; a detector's images and boxes). Subclasses hold their
    split arrays. `train_labels` are what batch sampling stratifies on: the class of a sample, or a
    detector image's rarest class."""

    name: ClassVar[str]
    stage_input_size: ClassVar[bool] = False  # whether a stage may train at its own input_size
    # The validation score the engine keeps the best epoch of and logs under this name: accuracy for
    # classifiers, mAP@0.5 for detectors. `evaluate` returns it summed over samples.
    score_name: ClassVar[str] = "val_accuracy"
    has_val_loss: ClassVar[bool] = True  # whether `evaluate`'s loss is meaningful (logged as val_loss)
    num_classes: int

    @classmethod
    def for_plan(cls, plan: Plan, dataset: Dataset, model: nn.Module) -> Task:
        """The task of a single-model plan's model on an ingested dataset (its train and val splits).
        Tasks that only serve multi-sensor steps (tensor, fusion) are built by those steps instead."""
        raise NotImplementedError(
            f"the {cls.name!r} task trains the models of multi-sensor plans only, not a single-model plan's model"
        )

    @property
    @abstractmethod
    def train_labels(self) -> np.ndarray:
        """Integer class labels (N,) of the training split."""

    @property
    @abstractmethod
    def val_labels(self) -> np.ndarray:
        """Integer class labels (M,) of the validation split."""

    @abstractmethod
    def train_batch(
        self, index: np.ndarray, stage: ResolvedStage, generator: torch.Generator | None, device: torch.device
    ) -> tuple[Inputs, torch.Tensor]:
        """Training samples `index` (sorted) as (model input on `device`, target on `device`).
        `generator` draws this step's augmentation; None: no augmentation (statistics passes, probes
        of unaugmented batches). The target is class indices (B,) or soft labels (B, C) when mixed."""

    def forward(self, model: nn.Module, inputs: Inputs) -> torch.Tensor:
        """Logits (B, C) of the model on a batch made by this task."""
        return model(inputs)  # type: ignore[no-any-return]

    def training_loss(
        self, model: nn.Module, inputs: Inputs, target: torch.Tensor, criterion: nn.Module
    ) -> torch.Tensor:
        """The scalar loss of one training batch: the plan's loss on the logits. A task whose model
        computes its own losses (a detector) overrides this."""
        return criterion(self.forward(model, inputs).float(), target)  # type: ignore[no-any-return]

    def validation_metrics(self) -> dict[str, float]:
        """Metrics of the last `evaluate` beyond its score and loss (a detector's mAP@0.5:0.95, P/R/F1)."""
        return {}

    @abstractmethod
    def evaluate(
        self, model: nn.Module, rows: slice, batch_size: int, device: torch.device, autocast: Autocast
    ) -> tuple[float, float, float]:
        """(summed score, summed cross-entropy, samples) over validation rows `rows` (a rank's share), in eval
        mode; the score is `score_name`'s (classifiers: correct predictions)."""

    @abstractmethod
    def eval_batch(self, batch_size: int, device: torch.device) -> Inputs:
        """One validation batch as the model sees it: the budget probe times a validation pass with it."""

    # -- the frozen-prefix feature cache of head-only stages ------------------------------------
    def can_cache_features(self, model: nn.Module) -> bool:
        """Whether a head-only stage may train on cached features of the frozen rest of the model."""
        return False

    def extract_features(
        self,
        model: nn.Module,
        split: str,
        index: np.ndarray | None,
        stage: ResolvedStage,
        batch_size: int,
        device: torch.device,
        bf16: bool,
    ) -> torch.Tensor:
        """Pre-head features (N, F), float32 on the CPU, of split rows `index` (None: all), eval mode."""
        raise NotImplementedError(f"task {self.name!r} has no feature cache")

    def head_on_features(self, model: nn.Module) -> nn.Module:
        """The module a cached head stage trains: features (B, F) -> logits, as the full model would."""
        raise NotImplementedError(f"task {self.name!r} has no feature cache")

    def eval_head(self, model: nn.Module) -> nn.Module:
        """The classifier that scores cached validation features (eval mode is set by the caller)."""
        return model.get_classifier()  # type: ignore[operator,no-any-return]

    def statistics_batches(
        self, index: np.ndarray, stage: ResolvedStage, batch_size: int, device: torch.device
    ) -> Iterator[Inputs]:
        """Unaugmented training batches of `index`, as `stage` feeds them, for re-estimating BatchNorm statistics."""
        for start in range(0, len(index), batch_size):
            yield self.train_batch(index[start : start + batch_size], stage, None, device)[0]
