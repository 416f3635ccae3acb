"""Validation passes: sums, so that distributed ranks can add their shares."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rooivalk.data.transforms import to_model_input


@dataclass
class InputSpec:
    input_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels_last: bool


def model_batches(
    images: np.ndarray, inputs: InputSpec, batch_size: int, device: torch.device
) -> Iterator[tuple[int, torch.Tensor]]:
    """(start index, model-ready batch) over uint8 images, preprocessed exactly as in training."""
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        batch = to_model_input(chunk, inputs.input_size, inputs.mean, inputs.std, inputs.in_chans, inputs.channels_last)
        yield start, batch.to(device)


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
    for start, batch in model_batches(images, inputs, batch_size, device):
        with autocast():
            logits = model(batch).float().cpu()
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
