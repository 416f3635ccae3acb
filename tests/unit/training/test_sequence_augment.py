"""Sequence augmentations (rooivalk.training.tasks.sequence_augment): seeded, layout-aware, padding-respecting."""

from __future__ import annotations

import random

import pytest
import torch

from rooivalk.training.tasks.sequence_augment import (
    SequenceAugment,
    SequenceAugmentSettings,
    _shift_in_time,
    landmark_layout,
)

NAMES = [f"{axis}{landmark}" for landmark in range(21) for axis in "xyz"]
ONLY_ROTATION = SequenceAugmentSettings(
    probability=1.0, rotation_degrees=40.0, scale=(1.0, 1.0), translation=0.0, noise_std=0.0, time_shift=0.0
)
EVERYTHING = SequenceAugmentSettings(probability=1.0, time_shift=0.3)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(features: int = 63, steps: int = 12, lengths: tuple[int, ...] = (12, 7, 3, 10)) -> tuple[torch.Tensor, ...]:
    """(B, T, F) random sequences edge-padded past their lengths, and the lengths (B,)."""
    batch = torch.rand(len(lengths), steps, features, generator=_generator(0))
    for b, length in enumerate(lengths):
        batch[b, length:] = batch[b, length - 1]
    return batch, torch.tensor(lengths)


def _points(batch: torch.Tensor) -> torch.Tensor:
    return batch.reshape(*batch.shape[:2], 21, 3)  # NAMES order: landmark-major, then x, y, z


def test_same_generator_seed_same_batch_another_seed_another():
    batch, lengths = _batch()
    augment = SequenceAugment(EVERYTHING, landmark_layout(NAMES))
    first = augment(batch, lengths, _generator(1))
    assert torch.equal(first, augment(batch, lengths, _generator(1)))
    assert not torch.equal(first, augment(batch, lengths, _generator(2)))
    assert first.shape == batch.shape
    assert not torch.equal(first, batch)


def test_probability_zero_is_the_identity_and_draws_as_much_as_any_other():
    batch, lengths = _batch()
    augment = SequenceAugment(EVERYTHING, landmark_layout(NAMES))
    still, moving = _generator(3), _generator(3)
    assert torch.equal(augment.with_probability(0.0)(batch, lengths, still), batch)
    augment(batch, lengths, moving)
    # Every draw is made whatever the probability: the next batch gets the same numbers either way.
    assert torch.equal(torch.rand(4, generator=still), torch.rand(4, generator=moving))
    assert augment.with_probability(0.3).settings.probability == 0.3


def test_each_sample_is_augmented_by_chance():
    batch, lengths = _batch(lengths=(12,) * 16)
    augment = SequenceAugment(SequenceAugmentSettings(probability=0.2), landmark_layout(NAMES))
    changed = (augment(batch, lengths, _generator(0)) != batch).flatten(1).any(dim=1)
    assert 0 < int(changed.sum()) < 16  # each sample escapes all five effects with chance 0.8 ** 5


def test_rotation_keeps_every_distance_to_the_wrist():
    batch, lengths = _batch()
    out = SequenceAugment(ONLY_ROTATION, landmark_layout(NAMES))(batch, lengths, _generator(4))
    before, after = _points(batch), _points(out)
    torch.testing.assert_close(after[:, :, 0], before[:, :, 0])  # the wrist stays put
    distance = (before - before[:, :, :1]).norm(dim=-1)
    torch.testing.assert_close((after - after[:, :, :1]).norm(dim=-1), distance)
    assert (after - before).abs().max() > 0.05


def test_scaling_is_about_the_wrist_and_translation_moves_every_landmark_alike():
    batch, lengths = _batch()
    layout = landmark_layout(NAMES)
    scaling = SequenceAugmentSettings(1.0, 0.0, (1.5, 2.0), 0.0, 0.0, 0.0)
    before, after = _points(batch), _points(SequenceAugment(scaling, layout)(batch, lengths, _generator(5)))
    torch.testing.assert_close(after[:, :, 0], before[:, :, 0])
    ratio = (after - after[:, :, :1]).norm(dim=-1)[:, :, 1:] / (before - before[:, :, :1]).norm(dim=-1)[:, :, 1:]
    assert ratio.min() >= 1.5 - 1e-4
    assert ratio.max() <= 2.0 + 1e-4
    torch.testing.assert_close(ratio, ratio[:, :1, :1].expand_as(ratio))  # one factor per sample
    moving = SequenceAugmentSettings(1.0, 0.0, (1.0, 1.0), 0.2, 0.0, 0.0)
    step = _points(SequenceAugment(moving, layout)(batch, lengths, _generator(5))) - before
    torch.testing.assert_close(step, step[:, :1, :1].expand_as(step))
    assert step.abs().max() > 0.01


def test_padding_after_lengths_stays_edge_padded():
    batch, lengths = _batch()
    for seed in range(5):
        out = SequenceAugment(EVERYTHING, landmark_layout(NAMES))(batch, lengths, _generator(seed))
        for b, length in enumerate(lengths.tolist()):
            assert torch.equal(out[b, length:], out[b, length - 1].expand_as(out[b, length:]))


def test_time_shift_repeats_edge_frames_and_keeps_lengths():
    batch = torch.arange(6.0).reshape(1, 6, 1).repeat(3, 1, 1)  # frame t holds t
    lengths, shift = torch.tensor([6, 4, 4]), torch.tensor([2, -1, 0])
    out = _shift_in_time(batch, lengths, shift)[..., 0]
    assert out[0].tolist() == [0, 0, 0, 1, 2, 3]  # later: the first frame repeats, the last two drop
    assert out[1].tolist() == [1, 2, 3, 3, 3, 3]  # earlier: the last valid frame repeats into padding
    assert out[2].tolist() == [0, 1, 2, 3, 3, 3]


def test_layout_is_found_by_name_and_refused_when_not_a_hand():
    shuffled = NAMES[:]
    random.Random(0).shuffle(shuffled)
    layout = landmark_layout(["speed", *shuffled])
    assert layout is not None
    assert layout.shape == (21, 3)
    assert ["speed", *shuffled][int(layout[20, 1])] == "y20"
    assert landmark_layout([name.upper().replace("X", "X_") for name in NAMES]) is not None
    assert landmark_layout(["a", "b", "c"]) is None
    assert landmark_layout(NAMES[:-1]) is None
    assert landmark_layout([*NAMES, "x21", "y21", "z21"]) is None  # a pose, not one hand
    with pytest.raises(ValueError, match="missing z20"):
        landmark_layout(NAMES[:-1], required=True)


def test_without_a_landmark_layout_there_is_no_rotation():
    batch, lengths = _batch(features=8)
    augment = SequenceAugment(ONLY_ROTATION, landmark_layout([f"f{i}" for i in range(8)]))
    assert augment.layout is None
    assert torch.equal(augment(batch, lengths, _generator(0)), batch)
    out = SequenceAugment(EVERYTHING)(batch, lengths, _generator(0))  # scale, offsets, noise, shift still act
    assert not torch.equal(out, batch)
    assert torch.isfinite(out).all()


def test_features_beside_the_landmarks_are_not_rotated():
    batch, lengths = _batch(features=64)
    names = ["speed", *NAMES]
    out = SequenceAugment(ONLY_ROTATION, landmark_layout(names))(batch, lengths, _generator(6))
    assert torch.equal(out[..., 0], batch[..., 0])
    assert not torch.equal(out[..., 1:], batch[..., 1:])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="probability"):
        SequenceAugmentSettings(probability=1.5)
    with pytest.raises(ValueError, match="scale"):
        SequenceAugmentSettings(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="noise_std"):
        SequenceAugmentSettings(noise_std=-0.1)
    with pytest.raises(ValueError, match="lengths"):
        SequenceAugment(EVERYTHING)(torch.zeros(2, 5, 3), torch.tensor([5]), _generator(0))
