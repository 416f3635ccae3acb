"""Mixup and CutMix (rooivalk.training.tasks.mixing): determinism, target rows, pasted area."""

from __future__ import annotations

import pytest
import torch

from rooivalk.plan import MixSpec
from rooivalk.training.tasks.mixing import MixupCutmix


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    # Constant images per sample (value = index + 1): a pasted pixel shows whose it is.
    images = torch.arange(1, 7, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, 16, 16).contiguous()
    return images, torch.tensor([0, 1, 2, 3, 4, 2])


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "spec", [MixSpec(mixup_alpha=0.4), MixSpec(cutmix_alpha=1.0), MixSpec(mixup_alpha=0.2, cutmix_alpha=1.0)]
)
def test_same_seed_same_batch_and_rows_sum_to_one(spec: MixSpec) -> None:
    images, labels = _batch()
    mix = MixupCutmix(spec, num_classes=5)
    first, second = mix(images, labels, _generator(3)), mix(images, labels, _generator(3))
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1], second[1])
    mixed, targets = first
    assert mixed.shape == images.shape
    assert targets.shape == (6, 5)
    assert torch.allclose(targets.sum(1), torch.ones(6))
    assert not torch.equal(mixed, images)
    assert torch.equal(images, _batch()[0])  # the input is left alone


def test_different_seeds_differ() -> None:
    images, labels = _batch()
    mix = MixupCutmix(MixSpec(mixup_alpha=1.0), num_classes=5)
    assert not torch.equal(mix(images, labels, _generator(0))[0], mix(images, labels, _generator(1))[0])


def test_cutmix_lam_matches_pasted_area() -> None:
    images, labels = _batch()
    mix = MixupCutmix(MixSpec(cutmix_alpha=1.0), num_classes=5)
    for seed in range(5):
        mixed, targets = mix(images, labels, _generator(seed))
        # Sample 0 (value 1) gets its partner, sample 5 (value 6, label 2), inside the box.
        kept = float((mixed[0] == 1).float().mean())
        assert targets[0, 0] == pytest.approx(kept)
        assert targets[0, 2] == pytest.approx(1 - kept)


def test_mixup_blends_images_and_targets_alike() -> None:
    images, labels = _batch()
    mixed, targets = MixupCutmix(MixSpec(mixup_alpha=0.4), num_classes=5)(images, labels, _generator(0))
    lam = float(targets[0, 0])
    assert torch.allclose(mixed[0], images[0] * lam + images[5] * (1 - lam))


def test_unmixed_batches_get_one_hot_targets() -> None:
    images, labels = _batch()
    disabled = MixupCutmix(MixSpec(), num_classes=5)
    assert not disabled.enabled
    for mix in (disabled, MixupCutmix(MixSpec(mixup_alpha=1.0, prob=0.0), num_classes=5)):
        mixed, targets = mix(images, labels, _generator(0))
        assert mixed is images
        assert torch.equal(targets, torch.nn.functional.one_hot(labels, 5).float())


def test_channels_last_is_kept() -> None:
    images, labels = _batch()
    images = images.contiguous(memory_format=torch.channels_last)
    for spec in (MixSpec(mixup_alpha=1.0), MixSpec(cutmix_alpha=1.0)):
        mixed, _ = MixupCutmix(spec, num_classes=5)(images, labels, _generator(0))
        assert mixed.is_contiguous(memory_format=torch.channels_last)
