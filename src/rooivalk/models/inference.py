"""Batched inference over named arrays, shared by every model kind that reads preprocessed arrays
(sensor models, fusion) and by the training tasks' prediction."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

Arrays = dict[str, np.ndarray]  # name -> (N, ...) with the sample on axis 0
Batch = dict[str, torch.Tensor]


def gather_rows(arrays: Arrays, rows: np.ndarray | slice) -> Batch:
    """The rows of every array as CPU tensors (a copy only where the rows are not contiguous)."""
    return {name: torch.from_numpy(np.ascontiguousarray(array[rows])) for name, array in arrays.items()}


def row_batches(arrays: Arrays, batch_size: int) -> Iterator[tuple[int, Batch]]:
    """(first row, batch) over all rows in order."""
    count = len(next(iter(arrays.values())))
    for start in range(0, count, batch_size):
        yield start, gather_rows(arrays, slice(start, start + batch_size))


@torch.inference_mode()
def batched_logits(
    model: nn.Module,
    arrays: Arrays,
    batch_size: int,
    forward: Callable[[nn.Module, Batch], torch.Tensor],
    num_classes: int,
) -> torch.Tensor:
    """Logits (N, C), float32 on the CPU, of `forward(model, batch)` over every row, in eval mode."""
    model.eval()
    outputs = [forward(model, batch).float().cpu() for _, batch in row_batches(arrays, batch_size)]
    return torch.cat(outputs) if outputs else torch.empty(0, num_classes)
