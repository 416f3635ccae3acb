"""Detection augmentation (rooivalk.training.tasks.detection_augment): boxes follow pixels, seeded, strength-scaled."""

from __future__ import annotations

import pytest
import torch

from rooivalk.training.tasks.detection_augment import (
    DetectionAugment,
    DetectionAugmentSettings,
    DetectionSample,
    mixup,
    mosaic,
    random_train_size,
)
from rooivalk.training.tasks.detection_weather import WEATHER_EFFECTS

STILL = DetectionAugmentSettings(
    hflip=0.0, scale=(1.0, 1.0), rotation=0.0, crop_min_area=1.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0
)
GEOMETRY = DetectionAugmentSettings(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
EVERYTHING = DetectionAugmentSettings(rain=1.0, fog=1.0, sun_flare=1.0, glare=1.0, noise=1.0)


def _white_rectangle(height: int, width: int, box: tuple[int, int, int, int]) -> DetectionSample:
    """(3, H, W) black uint8 image with `box` painted white, its box (1, 4) and label (1,)."""
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 255
    return image, torch.tensor([box], dtype=torch.float32), torch.tensor([7])


def _white_bbox(image: torch.Tensor) -> torch.Tensor:
    """x1, y1, x2, y2 of the pixels brighter than mid grey (the affine's fill is 114)."""
    ys, xs = torch.nonzero((image > 127).all(dim=0), as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def _scene(seed: int = 0, count: int = 12) -> DetectionSample:
    """A (3, 96, 128) random image with `count` random boxes, some of them tiny."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8, generator=generator)
    corners = torch.rand(count, 2, 2, generator=generator) * torch.tensor([128.0, 96.0])
    boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=1)
    return image, boxes, torch.arange(count)


def test_horizontal_flip_mirrors_the_box_exactly() -> None:
    image, boxes, labels = _white_rectangle(48, 64, (10, 5, 30, 25))
    out, flipped, kept = DetectionAugment(DetectionAugmentSettings(**{**STILL.__dict__, "hflip": 1.0}))(
        image, boxes, labels
    )
    torch.testing.assert_close(flipped, torch.tensor([[34.0, 5.0, 54.0, 25.0]]), atol=0, rtol=0)
    assert torch.equal(out, image.flip(-1))
    assert torch.equal(kept, labels)


@pytest.mark.parametrize("seed", range(6))
def test_box_stays_on_its_object_through_flip_affine_and_crop(seed: int) -> None:
    torch.manual_seed(seed)
    out, boxes, labels = DetectionAugment(GEOMETRY)(*_white_rectangle(96, 128, (40, 30, 80, 60)))
    assert out.shape == (3, 96, 128)
    assert labels.tolist() == [7]
    torch.testing.assert_close(boxes[0], _white_bbox(out), atol=3.0, rtol=0)


@pytest.mark.parametrize("seed", range(4))
def test_boxes_stay_inside_the_image_and_above_min_size(seed: int) -> None:
    settings = DetectionAugmentSettings(scale=(0.5, 1.8), rotation=20.0, crop_min_area=0.4, min_box_size=4.0)
    image, boxes, labels = _scene(seed, count=40)
    boxes[:3] = torch.tensor([[5.0, 5.0, 6.0, 6.0], [60.0, 40.0, 61.0, 41.0], [100.0, 80.0, 101.0, 81.0]])
    torch.manual_seed(seed)
    image, boxes, labels = DetectionAugment(settings)(image, boxes, labels)
    assert len(boxes) == len(labels)
    assert not {0, 1, 2} & set(labels.tolist())  # 1x1 px: under 4 px even zoomed 1.8x and rotated, dropped
    assert bool((boxes >= 0).all())
    assert bool((boxes[:, 0::2] <= 128).all())
    assert bool((boxes[:, 1::2] <= 96).all())
    assert bool(((boxes[:, 2:] - boxes[:, :2]) >= 4.0).all())


def test_same_seed_same_output_another_seed_another() -> None:
    augment = DetectionAugment(EVERYTHING)
    scene = _scene()
    torch.manual_seed(11)
    first = augment(*scene)
    torch.manual_seed(11)
    again = augment(*scene)
    torch.manual_seed(12)
    other = augment(*scene)
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("name", list(WEATHER_EFFECTS))
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_weather_effect_keeps_shape_dtype_and_changes_pixels(name: str, dtype: torch.dtype) -> None:
    image = torch.full((3, 64, 80), 90, dtype=torch.uint8)
    image = image if dtype == torch.uint8 else image.float() / 255
    effect = WEATHER_EFFECTS[name]
    out = effect(image, torch.Generator().manual_seed(0))
    assert out.shape == image.shape
    assert out.dtype == image.dtype
    assert float((out.float() - image.float()).abs().mean()) > (0.5 if dtype == torch.uint8 else 0.5 / 255)
    assert torch.equal(out, effect(image, torch.Generator().manual_seed(0)))
    if dtype == torch.float32:
        assert 0 <= float(out.min()) <= float(out.max()) <= 1


def test_strength_zero_is_the_identity() -> None:
    image, boxes, labels = _scene()
    settings = DetectionAugmentSettings(rain=1.0, noise=1.0, mosaic=1.0, mixup=1.0, strength=0.0)
    assert not settings.scaled(0.0).enabled
    assert not EVERYTHING.scaled(0.0).enabled
    out = DetectionAugment(settings)(image, boxes, labels)
    assert out[0] is image
    assert out[1] is boxes
    assert out[2] is labels


def test_scaled_shrinks_magnitudes_and_probabilities_toward_no_change() -> None:
    half = DetectionAugmentSettings(rain=0.8).scaled(0.5)
    assert half.scale == pytest.approx((0.9, 1.1))
    assert (half.rotation, half.hflip, half.rain, half.hue) == pytest.approx((2.5, 0.25, 0.4, 0.0075))
    assert half.crop_min_area == pytest.approx(0.85)
    assert half.min_box_size == 2.0
    assert DetectionAugmentSettings(hflip=0.8).scaled(3.0).hflip == 1.0  # probabilities cap at 1
    assert EVERYTHING.scaled(1.0) == EVERYTHING
    # The strength field is honoured when the augment is built, on top of any baked-in scaling.
    assert DetectionAugment(DetectionAugmentSettings(rotation=8.0, strength=0.25)).settings.rotation == 2.0


@pytest.mark.parametrize("field", ["hflip", "fog", "mosaic"])
def test_probabilities_outside_zero_one_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        DetectionAugmentSettings(**{field: 1.5})


@pytest.mark.parametrize("seed", range(4))
def test_mosaic_has_the_size_and_central_boxes_of_all_four(seed: int) -> None:
    # Each input: (3, 64, 96) with a 12x12 white square at its centre, labelled with its index.
    samples = []
    for label in range(4):
        image, boxes, _ = _white_rectangle(64, 96, (42, 26, 54, 38))
        samples.append((image, boxes, torch.tensor([label])))
    image, boxes, labels = mosaic(samples, (128, 160), torch.Generator().manual_seed(seed))
    assert image.shape == (3, 128, 160)
    assert image.dtype == torch.uint8
    assert sorted(labels.tolist()) == [0, 1, 2, 3]
    assert bool((boxes >= 0).all())
    assert bool((boxes[:, 0::2] <= 160).all())
    assert bool((boxes[:, 1::2] <= 128).all())
    for box in boxes:  # each box covers white pixels only
        x1, y1, x2, y2 = (int(v) for v in box.round())
        assert bool((image[:, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1] > 127).all())


def test_mixup_letterboxes_blends_and_keeps_both_boxes() -> None:
    a = _white_rectangle(64, 64, (8, 8, 24, 24))
    b = (torch.full((3, 32, 64), 200, dtype=torch.uint8), torch.tensor([[0.0, 0.0, 32.0, 32.0]]), torch.tensor([3]))
    image, boxes, labels = mixup(a, b, ratio=0.5)
    assert image.shape == (3, 64, 64)
    assert labels.tolist() == [7, 3]
    torch.testing.assert_close(boxes, torch.tensor([[8.0, 8.0, 24.0, 24.0], [0.0, 16.0, 32.0, 48.0]]))
    assert int(image[0, 10, 10]) == 184  # a's white over b's grey padding: (255 + 114) / 2, half to even
    assert int(image[0, 32, 40]) == 100  # black under b's grey: 200 / 2


def test_sample_draws_mosaic_and_mixup_at_the_requested_size() -> None:
    scenes = [_scene(seed) for seed in range(5)]
    augment = DetectionAugment(DetectionAugmentSettings(mosaic=1.0, mixup=1.0))
    torch.manual_seed(0)
    image, boxes, labels = augment.sample(scenes.__getitem__, index=2, count=5, size=(64, 96))
    assert image.shape == (3, 64, 96)
    assert len(boxes) == len(labels) > 0


def test_random_train_size_is_stride_aligned_in_range_and_seeded() -> None:
    sizes = {random_train_size((384, 640), (0.5, 1.5), generator=torch.Generator().manual_seed(s)) for s in range(50)}
    assert len(sizes) > 5
    for height, width in sizes:
        assert height % 32 == 0
        assert width % 32 == 0
        assert 192 <= height <= 576
        assert 320 <= width <= 960
        assert abs(width / height - 640 / 384) < 0.2
    generator = torch.Generator().manual_seed(3)
    assert random_train_size((640, 640), (0.5, 1.5), generator=generator) == random_train_size(
        (640, 640), (0.5, 1.5), generator=torch.Generator().manual_seed(3)
    )
