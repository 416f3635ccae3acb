"""Validation passes: sums, so that distributed ranks can add their shares."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rooivalk.data.transforms import iter_model_batches


@dataclass
class InputSpec:
    input_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels_last: bool

    def preprocessing(self) -> tuple[int, tuple[float, ...], tuple[float, ...], int, bool]:
        """Positional arguments of to_model_input / iter_model_batches after the images."""
        return self.input_size, self.mean, self.std, self.in_chans, self.channels_last


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    inputs: InputSpec,
    batch_size: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]],
) -> tuple[float, float, float]:
    """(correct predictions, summed cross-entropy, samples) over a split: sums, so ranks can add them."""
    model.eval()
    correct, loss_sum = 0, 0.0
    labels_t = torch.as_tensor(labels)
    for start, batch in iter_model_batches(images, batch_size, *inputs.preprocessing()):
        with autocast():
            logits = model(batch.to(device)).float().cpu()
        target = labels_t[start : start + batch_size]
        loss_sum += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(1) == target).sum())
    return float(correct), loss_sum, float(len(images))


@torch.inference_mode()
def evaluate_head(head: nn.Module, features: torch.Tensor, labels: np.ndarray) -> tuple[float, float, float]:
    """evaluate() for a classifier on cached pre-logit features (N, F)."""
    logits = head(features).float()
    target = torch.as_tensor(labels)
    loss_sum = float(nn.functional.cross_entropy(logits, target, reduction="sum"))
    return float((logits.argmax(1) == target).sum()), loss_sum, float(len(labels))
