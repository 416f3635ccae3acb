"""Batch augmentations (rooivalk.training.tasks.augment): seeded, shape/range/layout preserving, each effect acts."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from rooivalk.plan import AugmentSpec
from rooivalk.training.tasks.augment import BatchAugment, line_kernel

EVERYTHING = AugmentSpec(
    random_resized_crop=(0.5, 1.0),
    hflip=0.5,
    vflip=0.5,
    rotation=20,
    color_jitter=0.3,
    grayscale=0.3,
    fog=0.5,
    rain=0.5,
    motion_blur=0.5,
)
NOTHING: dict[str, Any] = {"hflip": 0.0}


def _images(channels_last: bool = False) -> torch.Tensor:
    images = torch.rand(4, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_same_seed_same_output_different_seed_different() -> None:
    augment = BatchAugment(EVERYTHING)
    images = _images()
    first = augment(images, _generator(1))
    assert torch.equal(first, augment(images, _generator(1)))
    assert not torch.equal(first, augment(images, _generator(2)))


@pytest.mark.parametrize("channels_last", [False, True])
def test_shape_dtype_range_and_layout_are_kept(channels_last: bool) -> None:
    images = _images(channels_last)
    out = BatchAugment(EVERYTHING)(images, _generator(0))
    assert out.shape == images.shape
    assert out.dtype == images.dtype
    assert float(out.min()) >= 0
    assert float(out.max()) <= 1
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_probability_zero_is_identity() -> None:
    augment = BatchAugment(AugmentSpec(**NOTHING))
    assert not augment.enabled
    images = _images()
    assert augment(images, _generator(0)) is images


@pytest.mark.parametrize(
    "effect",
    [
        {"random_resized_crop": (0.3, 0.6)},
        {"hflip": 1.0},
        {"vflip": 1.0},
        {"rotation": 30.0},
        {"color_jitter": 0.5},
        {"grayscale": 1.0},
        {"fog": 1.0},
        {"rain": 1.0},
        {"motion_blur": 1.0},
    ],
)
def test_each_effect_changes_every_image(effect: dict[str, Any]) -> None:
    augment = BatchAugment(AugmentSpec(**{**NOTHING, **effect}))
    assert augment.enabled
    images = _images()
    out = augment(images, _generator(0))
    changed = (out - images).abs().flatten(1).amax(1)  # (B,)
    assert bool((changed > 1e-3).all()), changed


def test_line_kernel_draws_a_centred_line() -> None:
    horizontal = line_kernel(5, 0.0)
    assert horizontal[2].tolist() == [1.0] * 5
    assert float(horizontal.sum()) == 5
    assert torch.equal(line_kernel(5, 90.0), horizontal.T)
    assert torch.equal(line_kernel(3, 45.0), torch.eye(3).flip(0))
