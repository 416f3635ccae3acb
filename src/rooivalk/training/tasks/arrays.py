"""Tasks of array datasets: sequences for `rnn` models, table rows for `mlp` models.

`SequenceClassification` keeps each split's raw frames (N, T, F) with their lengths (N,) and
standardizes per batch, after augmenting: the augmentations (rooivalk.training.tasks.sequence_augment)
move landmarks in their own units, so they must see raw coordinates. The standardization is the
dataset's (train split only), the same that export writes into the bundle. The model is called as
`model(sequences (B, T, F), lengths (B,))`.

`TableClassification` feeds a table dataset's model inputs (standardized numeric features and one-hot
categories, rooivalk.data.table_dataset.model_inputs) as `model(inputs (B, F))`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from rooivalk.models.array_inference import LENGTHS, SEQUENCES
from rooivalk.models.inference import Arrays, gather_rows
from rooivalk.training.engine.stages import ResolvedStage
from rooivalk.training.tasks.base import Inputs, to_device
from rooivalk.training.tasks.sequence_augment import SequenceAugment
from rooivalk.training.tasks.tensor import TensorClassification


class SequenceClassification(TensorClassification):
    """Arrays: {"sequences": float32 (N, T, F) raw frames, "lengths": int64 (N,)} per split."""

    name: ClassVar[str] = "sequence"

    def __init__(
        self,
        train: Arrays,
        train_labels: np.ndarray,
        val: Arrays,
        val_labels: np.ndarray,
        num_classes: int,
        mean: np.ndarray,
        std: np.ndarray,
        augment: SequenceAugment | None = None,
    ) -> None:
        super().__init__(train, train_labels, val, val_labels, num_classes)
        self.mean = torch.as_tensor(np.asarray(mean, dtype=np.float32))  # (F,)
        self.std = torch.as_tensor(np.asarray(std, dtype=np.float32))  # (F,)
        self.augment = augment

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> Inputs:
        sequences = (batch[SEQUENCES] - self.mean) / self.std  # (B, T, F)
        return {SEQUENCES: sequences, LENGTHS: batch[LENGTHS]}

    def forward(self, model: nn.Module, inputs: Inputs) -> torch.Tensor:
        assert isinstance(inputs, dict)
        return model(inputs[SEQUENCES], inputs[LENGTHS])  # type: ignore[no-any-return]

    def train_batch(
        self, index: np.ndarray, stage: ResolvedStage, generator: torch.Generator | None, device: torch.device
    ) -> tuple[Inputs, torch.Tensor]:
        batch = gather_rows(self.train, index)
        if self.augment is not None and generator is not None:
            augment = self.augment
            if stage.sequence_augment_probability is not None:
                augment = augment.with_probability(stage.sequence_augment_probability)
            batch[SEQUENCES] = augment(batch[SEQUENCES], batch[LENGTHS], generator)
        target = torch.as_tensor(self.train_labels[index]).to(device)
        return to_device(self.model_inputs(batch), device), target

    def can_cache_features(self, model: nn.Module) -> bool:
        return False  # the plan check refuses cache_features for sequence models


class TableClassification(TensorClassification):
    """Arrays: {"inputs": float32 (N, F) model inputs} per split."""

    name: ClassVar[str] = "table"

    def can_cache_features(self, model: nn.Module) -> bool:
        return False
