"""Turn stored uint8 images into model input, identically in training, evaluation and export.

Two halves so that training can augment in between: `to_unit_images` (uint8 -> float [0, 1], model
channels, model size) and `normalize`. `to_model_input` is both, for evaluation and export.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def to_unit_images(images: np.ndarray | torch.Tensor, input_size: int, in_chans: int = 3) -> torch.Tensor:
    """uint8 (B, H, W, C) -> float32 (B, in_chans, S, S) in [0, 1], resized bilinearly (antialiased).

    Grayscale (C=1) is repeated to the model's 3 channels so ImageNet weights apply unchanged.
    """
    batch = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
    batch = batch.permute(0, 3, 1, 2).float().div_(255.0)  # (B, C, H, W)
    if batch.shape[1] != in_chans:
        if batch.shape[1] == 1:
            batch = batch.expand(-1, in_chans, -1, -1)
        elif in_chans == 1:
            batch = batch.mean(dim=1, keepdim=True)
        else:
            raise ValueError(f"cannot map {batch.shape[1]} image channels to {in_chans} model channels")
    if batch.shape[-2:] != (input_size, input_size):
        batch = F.interpolate(
            batch, size=(input_size, input_size), mode="bilinear", align_corners=False, antialias=True
        )
    return batch.contiguous()


def normalize(
    batch: torch.Tensor, mean: Sequence[float], std: Sequence[float], channels_last: bool = False
) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    out = (batch - mean_t) / std_t
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out.contiguous()


def to_model_input(
    images: np.ndarray | torch.Tensor,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_chans: int = 3,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 (B, H, W, C) -> normalized float32 (B, in_chans, S, S)."""
    return normalize(to_unit_images(images, input_size, in_chans), mean, std, channels_last)


def iter_model_batches(
    images: np.ndarray,
    batch_size: int,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_chans: int = 3,
    channels_last: bool = False,
) -> Iterator[tuple[int, torch.Tensor]]:
    """(start index, model input) over uint8 images, in order: the one inference batching loop."""
    for start in range(0, len(images), batch_size):
        yield start, to_model_input(images[start : start + batch_size], input_size, mean, std, in_chans, channels_last)
