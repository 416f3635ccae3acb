"""Classification of preprocessed arrays: sensor models (RF IQ, radar tracks, audio) and fusion.

Inputs are named float arrays with the sample on axis 0 (`{"inputs": (N, ...)}` for a sensor model;
one embedding matrix per sensor plus a presence mask for fusion). Batches are gathered per step, so
the engine never holds a second copy of a split. A sensor model that splits into `forward_features`
and `head` (rooivalk.models.sensor_base.SensorModel) may train a head-only stage on cached encoder
features; the fusion model's inputs are cached embeddings already.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from rooivalk.models.inference import Arrays, batched_logits, gather_rows, row_batches
from rooivalk.training.engine.stages import ResolvedStage
from rooivalk.training.tasks.base import Autocast, Inputs, Task, score_logits, to_device


class TensorClassification(Task):
    """A model of one input tensor: `model(inputs)` with inputs (B, ...) from `arrays["inputs"]`."""

    name: ClassVar[str] = "tensor"

    def __init__(
        self, train: Arrays, train_labels: np.ndarray, val: Arrays, val_labels: np.ndarray, num_classes: int
    ) -> None:
        self.train, self.val = train, val
        self._train_labels, self._val_labels = np.asarray(train_labels), np.asarray(val_labels)
        self.num_classes = num_classes

    @property
    def train_labels(self) -> np.ndarray:
        return self._train_labels

    @property
    def val_labels(self) -> np.ndarray:
        return self._val_labels

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> Inputs:
        """The model's input from a gathered batch of named arrays."""
        return batch["inputs"]

    def train_batch(
        self, index: np.ndarray, stage: ResolvedStage, generator: torch.Generator | None, device: torch.device
    ) -> tuple[Inputs, torch.Tensor]:
        target = torch.as_tensor(self._train_labels[index]).to(device)
        return to_device(self.model_inputs(gather_rows(self.train, index)), device), target

    def predict(self, model: nn.Module, arrays: Arrays, batch_size: int, device: torch.device) -> torch.Tensor:
        """Logits (N, C) on the CPU for every row of `arrays`, in eval mode."""

        def forward(network: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.forward(network, to_device(self.model_inputs(batch), device))

        return batched_logits(model, arrays, batch_size, forward, self.num_classes)

    @torch.inference_mode()
    def evaluate(
        self, model: nn.Module, rows: slice, batch_size: int, device: torch.device, autocast: Autocast
    ) -> tuple[float, float, float]:
        model.eval()
        arrays = {name: array[rows] for name, array in self.val.items()}
        labels = torch.as_tensor(self._val_labels[rows])
        correct, loss_sum = 0.0, 0.0
        for start, batch in row_batches(arrays, batch_size):
            with autocast():
                logits = self.forward(model, to_device(self.model_inputs(batch), device)).float().cpu()
            batch_correct, batch_loss = score_logits(logits, labels[start : start + batch_size])
            correct, loss_sum = correct + batch_correct, loss_sum + batch_loss
        return correct, loss_sum, float(len(labels))

    def eval_batch(self, batch_size: int, device: torch.device) -> Inputs:
        return to_device(self.model_inputs(gather_rows(self.val, slice(0, batch_size))), device)

    # A SensorModel: encoder = forward_features (B, ...) -> (B, D); head = dropout + linear.
    def can_cache_features(self, model: nn.Module) -> bool:
        return hasattr(model, "forward_features") and isinstance(getattr(model, "head", None), nn.Module)

    @torch.inference_mode()
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
        model.eval()
        arrays = self.train if split == "train" else self.val
        if index is not None:
            arrays = {name: array[index] for name, array in arrays.items()}
        chunks = []
        for _, batch in row_batches(arrays, batch_size):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                features = model.forward_features(to_device(self.model_inputs(batch), device))  # type: ignore[operator]
            chunks.append(features.float().cpu())
        return torch.cat(chunks)

    def head_on_features(self, model: nn.Module) -> nn.Module:
        return model.head  # type: ignore[return-value]  # its dropout is active in train mode

    def eval_head(self, model: nn.Module) -> nn.Module:
        return model.head  # type: ignore[return-value]


class FusionClassification(TensorClassification):
    """The fusion transformer: `model({sensor: (B, D_s)}, present (B, S))` over cached embeddings.
    Modality dropout lives in the model (train mode only) and draws from torch's global generator,
    which the engine re-seeds every step, so a resumed run drops the same sensors."""

    name: ClassVar[str] = "fusion"

    def __init__(
        self,
        sensors: list[str],
        train: Arrays,
        train_labels: np.ndarray,
        val: Arrays,
        val_labels: np.ndarray,
        num_classes: int,
    ) -> None:
        super().__init__(train, train_labels, val, val_labels, num_classes)
        self.sensors = sensors

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> Inputs:
        return batch

    def forward(self, model: nn.Module, inputs: Inputs) -> torch.Tensor:
        assert isinstance(inputs, dict)
        return model({name: inputs[name] for name in self.sensors}, inputs["present"])  # type: ignore[no-any-return]

    def can_cache_features(self, model: nn.Module) -> bool:
        return False  # its inputs are cached embeddings already
