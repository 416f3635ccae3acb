"""Losses (rooivalk.training.engine.losses): focal vs cross-entropy, soft targets, balanced weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from rooivalk.plan import LossSpec
from rooivalk.training.engine.losses import balanced_class_weights, build_loss


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(6, 4, generator=generator), torch.tensor([0, 1, 2, 3, 1, 0])


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_focal_with_gamma_zero_is_cross_entropy(batch: tuple[torch.Tensor, torch.Tensor], smoothing: float) -> None:
    logits, labels = batch
    focal = build_loss(LossSpec(name="focal", focal_gamma=0.0, label_smoothing=smoothing))
    assert focal(logits, labels) == pytest.approx(float(F.cross_entropy(logits, labels, label_smoothing=smoothing)))


def test_focal_with_gamma_zero_and_weights_is_soft_target_cross_entropy(
    batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    logits, labels = batch
    soft = F.softmax(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    counts = np.array([5, 1, 2, 4])
    focal = build_loss(LossSpec(name="focal", focal_gamma=0.0, class_weights="balanced"), counts)
    expected = F.cross_entropy(logits, soft, weight=balanced_class_weights(counts), label_smoothing=0.1)
    assert focal(logits, soft) == pytest.approx(float(expected))


def test_focal_down_weights_easy_examples_and_alpha_scales(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, labels = batch
    ce = build_loss(LossSpec(name="cross_entropy", label_smoothing=0.0))(logits, labels)
    focal = build_loss(LossSpec(name="focal", focal_gamma=2.0, label_smoothing=0.0))(logits, labels)
    alpha = build_loss(LossSpec(name="focal", focal_gamma=2.0, label_smoothing=0.0, focal_alpha=0.25))(logits, labels)
    assert 0 < float(focal) < float(ce)
    assert float(alpha) == pytest.approx(0.25 * float(focal))


@pytest.mark.parametrize("name", ["cross_entropy", "focal"])
def test_one_hot_soft_targets_equal_hard_labels(batch: tuple[torch.Tensor, torch.Tensor], name: str) -> None:
    logits, labels = batch
    loss = build_loss(LossSpec(name=name, label_smoothing=0.1))
    assert loss(logits, F.one_hot(labels, 4).float()) == pytest.approx(float(loss(logits, labels)))


def test_focal_runs_in_float32_under_bfloat16_logits(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, labels = batch
    loss = build_loss(LossSpec(name="focal"))(logits.bfloat16(), labels)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)


def test_balanced_weights_formula_and_errors() -> None:
    weights = balanced_class_weights(np.array([10, 30, 20]))
    assert weights.tolist() == pytest.approx([60 / (3 * 10), 60 / (3 * 30), 60 / (3 * 20)])
    assert balanced_class_weights(np.array([7, 7])).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match=r"classes \[1\]"):
        balanced_class_weights(np.array([4, 0, 2]))
    with pytest.raises(ValueError, match="class counts"):
        build_loss(LossSpec(class_weights="balanced"), None)
    loss = build_loss(LossSpec(class_weights="balanced"), np.array([10, 30, 20]))
    assert loss.weight is not None
    assert loss.weight.tolist() == pytest.approx(weights.tolist())
