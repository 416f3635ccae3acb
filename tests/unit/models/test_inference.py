"""Batched inference over named arrays (rooivalk.models.inference): the same logits as one forward pass,
in eval mode, every row once and in order."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rooivalk.models.inference import batched_logits, gather_rows, row_batches


def _forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(batch["inputs"])  # type: ignore[no-any-return]


def test_batches_give_the_logits_of_one_pass_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.5), nn.Linear(8, 3)).train()
    inputs = np.random.default_rng(0).normal(size=(23, 5)).astype(np.float32)
    logits = batched_logits(model, {"inputs": inputs}, 4, _forward, 3)
    assert not model.training  # dropout off: batching must not change the answer
    with torch.inference_mode():
        expected = model(torch.from_numpy(inputs))
    assert logits.shape == (23, 3)
    assert torch.allclose(logits, expected, atol=1e-6)


def test_no_rows_give_an_empty_matrix_of_the_class_count() -> None:
    empty = {"inputs": np.zeros((0, 5), np.float32)}
    assert batched_logits(nn.Linear(5, 3), empty, 4, _forward, 3).shape == (0, 3)


def test_row_batches_cover_every_row_once_in_order_and_gather_copies_only_what_it_must() -> None:
    arrays = {"a": np.arange(10), "b": np.arange(10) * 10}
    starts, seen = [], []
    for start, batch in row_batches(arrays, 4):
        starts.append(start)
        seen += batch["a"].tolist()
        assert batch["b"].tolist() == [10 * value for value in batch["a"].tolist()]
    assert starts == [0, 4, 8]
    assert seen == list(range(10))
    picked = gather_rows(arrays, np.array([7, 2]))
    assert picked["a"].tolist() == [7, 2]
