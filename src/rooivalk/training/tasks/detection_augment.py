"""Box-aware augmentation for detector training: geometry and colour, weather, mosaic, mixup, multi-scale.

A sample is (image uint8 (3, H, W), boxes float32 (N, 4) absolute x1, y1, x2, y2, labels int64 (N,)).
Flip, affine zoom + rotation, crop and colour jitter are torchvision transforms v2 on tv_tensors, so boxes
move with the pixels; weather and sensor effects (rooivalk.training.tasks.detection_weather) are plain
tensor ops that leave boxes alone. Every random number comes from the torch global RNG (which the training
engine seeds before every step, so transforms v2 replay) or from an explicit `torch.Generator`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from rooivalk.models.letterbox import LETTERBOX_FILL, letterbox
from rooivalk.training.tasks.detection_weather import WEATHER_EFFECTS

DetectionSample = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # image (3, H, W), boxes (N, 4), labels (N,)

# Per-stage strengths for `DetectionAugmentSettings.scaled`: heavy early, light when fine-tuning at the end.
STAGE_STRENGTHS = {"heavy": 1.0, "medium": 0.5, "light": 0.25}
_PROBABILITIES = ("hflip", "rain", "fog", "sun_flare", "glare", "noise", "mosaic", "mixup")
_JITTER = ("brightness", "contrast", "saturation")
_MIN_FRACTION = 0.1  # smallest zoom-out scale and crop area a large strength can reach
_CROP_STRETCH = 1.1  # a crop's aspect may differ from the image's by this factor (resized back: mild stretch)
_MIXUP_RATIO = (0.35, 0.65)  # weight of the first sample: both stay visible, as YOLO's Beta(32, 32) keeps them


@dataclass(frozen=True)
class DetectionAugmentSettings:
    """Amounts at strength 1; probabilities are in [0, 1].

    `strength` multiplies every magnitude and probability when a `DetectionAugment` is built (0 = identity);
    `scaled(s)` bakes a multiplier into the amounts themselves.
    """

    hflip: float = 0.5
    scale: tuple[float, float] = (0.8, 1.2)  # random zoom of the affine
    rotation: float = 5.0  # max degrees either way
    crop_min_area: float = 0.7  # random crop keeps at least this fraction of the area; 1.0 = off
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.015
    rain: float = 0.0
    fog: float = 0.0
    sun_flare: float = 0.0
    glare: float = 0.0  # headlight glare
    noise: float = 0.0  # shot + read sensor noise
    mosaic: float = 0.0  # a training sample is a 2x2 mosaic of 4 images
    mixup: float = 0.0  # blended with another sample, boxes of both kept
    min_box_size: float = 2.0  # pixels: boxes narrower or shorter after a transform are dropped with their labels
    strength: float = 1.0

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"DetectionAugmentSettings.{name} is a probability in [0, 1], got {value}")
        low, high = self.scale
        if not 0.0 < low <= high:
            raise ValueError(f"DetectionAugmentSettings.scale needs 0 < low <= high, got {self.scale}")
        if not 0.0 < self.crop_min_area <= 1.0:
            raise ValueError(f"DetectionAugmentSettings.crop_min_area must be in (0, 1], got {self.crop_min_area}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"DetectionAugmentSettings.hue must be in [0, 0.5], got {self.hue}")
        for name in ("rotation", *_JITTER, "min_box_size", "strength"):
            if getattr(self, name) < 0:
                raise ValueError(f"DetectionAugmentSettings.{name} must be >= 0, got {getattr(self, name)}")

    def scaled(self, strength: float) -> DetectionAugmentSettings:
        """These settings with magnitudes and probabilities multiplied by `strength` (0 = nothing happens).

        Zoom and crop move toward 1 (no change); probabilities cap at 1; min_box_size and `strength` stay.
        """
        if strength < 0:
            raise ValueError(f"strength must be >= 0, got {strength}")
        if strength == 1.0:
            return self
        low, high = self.scale
        return replace(
            self,
            scale=(max(1 - (1 - low) * strength, _MIN_FRACTION), 1 + (high - 1) * strength),
            rotation=self.rotation * strength,
            crop_min_area=min(max(1 - (1 - self.crop_min_area) * strength, _MIN_FRACTION), 1.0),
            hue=min(self.hue * strength, 0.5),
            **{name: getattr(self, name) * strength for name in _JITTER},
            **{name: min(getattr(self, name) * strength, 1.0) for name in _PROBABILITIES},
        )

    @property
    def enabled(self) -> bool:
        """Whether anything at all can change a sample."""
        amounts = [getattr(self, name) for name in ("rotation", "hue", *_JITTER, *_PROBABILITIES)]
        return self.strength > 0 and (self.scale != (1.0, 1.0) or self.crop_min_area < 1.0 or any(amounts))


def filter_boxes(
    boxes: torch.Tensor, labels: torch.Tensor, region: Sequence[float], min_size: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip boxes (N, 4) to region (x1, y1, x2, y2); drop those narrower or shorter than min_size (and empty ones)."""
    x1, y1, x2, y2 = region
    lower, upper = boxes.new_tensor([x1, y1, x1, y1]), boxes.new_tensor([x2, y2, x2, y2])
    clipped = torch.minimum(torch.maximum(boxes, lower), upper)
    sizes = clipped[:, 2:] - clipped[:, :2]  # (N, 2) widths, heights
    keep = (sizes >= min_size).all(dim=1) & (sizes > 0).all(dim=1)
    return clipped[keep], labels[keep]


def _uniform(generator: torch.Generator | None = None) -> float:
    """U(0, 1) from `generator` (on its device) or the torch global RNG."""
    device = generator.device if generator is not None else None
    return float(torch.rand((), generator=generator, device=device))


def _chance(probability: float, generator: torch.Generator | None = None) -> bool:
    return probability > 0 and _uniform(generator) < probability


class DetectionAugment:
    """`__call__(image, boxes, labels) -> (image, boxes, labels)`: one sample augmented, same image size.

    Order: flip, affine zoom + rotation, crop (resized back), min-size filter, colour jitter, then the
    weather and sensor effects each with its probability. Draws from the torch global RNG.
    """

    def __init__(self, settings: DetectionAugmentSettings | None = None) -> None:
        settings = settings or DetectionAugmentSettings()
        self.requested = settings  # as given, strength not yet applied: a stage rescales from these
        self.settings = settings.scaled(settings.strength)  # the amounts this augment applies
        s = self.settings
        self._geometry: list[v2.Transform] = []
        if s.hflip > 0:
            self._geometry.append(v2.RandomHorizontalFlip(p=s.hflip))
        if s.rotation > 0 or s.scale != (1.0, 1.0):
            affine = v2.RandomAffine(
                degrees=s.rotation, scale=s.scale, interpolation=v2.InterpolationMode.BILINEAR, fill=LETTERBOX_FILL
            )
            self._geometry.append(affine)
        jitter = (s.brightness, s.contrast, s.saturation, s.hue)
        self._colour = v2.ColorJitter(*jitter) if any(jitter) else None

    def __call__(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor) -> DetectionSample:
        s = self.settings
        if not s.enabled:
            return image, boxes, labels
        height, width = image.shape[-2:]
        geometry = list(self._geometry)
        if s.crop_min_area < 1.0:
            # Built per call: RandomResizedCrop resizes back to this image's size.
            aspect = width / height
            ratio = (aspect / _CROP_STRETCH, aspect * _CROP_STRETCH)
            geometry.append(v2.RandomResizedCrop((height, width), scale=(s.crop_min_area, 1.0), ratio=ratio))
        if geometry:
            wrapped = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))
            moved_image, moved = v2.Compose(geometry)(tv_tensors.Image(image), wrapped)
            image = moved_image.as_subclass(torch.Tensor)
            boxes, labels = filter_boxes(moved.as_subclass(torch.Tensor), labels, (0, 0, width, height), s.min_box_size)
        if self._colour is not None:
            image = self._colour(image)
        for name, effect in WEATHER_EFFECTS.items():
            if _chance(getattr(s, name)):
                image = effect(image, None)
        return image, boxes, labels

    def sample(
        self, load: Callable[[int], DetectionSample], index: int, count: int, size: tuple[int, int]
    ) -> DetectionSample:
        """A training sample of `size` (height, width) from a dataset of `count` samples read by `load(i)`.

        Sample `index` letterboxed, or with probability `mosaic` a mosaic of it and 3 random others; with
        probability `mixup` blended with another such sample; then augmented by `__call__`.
        """
        sample = self._base(load, index, count, size)
        if _chance(self.settings.mixup):
            other = self._base(load, int(torch.randint(count, ())), count, size)
            low, high = _MIXUP_RATIO
            sample = mixup(sample, other, low + (high - low) * _uniform())
        return self(*sample)

    def _base(
        self, load: Callable[[int], DetectionSample], index: int, count: int, size: tuple[int, int]
    ) -> DetectionSample:
        if _chance(self.settings.mosaic):
            others = [int(i) for i in torch.randint(count, (3,))]
            return mosaic([load(i) for i in (index, *others)], size, min_box_size=self.settings.min_box_size)
        image, boxes, labels = load(index)
        boxed, placement = letterbox(image, size)
        return boxed, placement.boxes_to_letterbox(boxes), labels


def mosaic(
    samples: Sequence[DetectionSample],
    size: tuple[int, int],
    generator: torch.Generator | None = None,
    min_box_size: float = 2.0,
) -> DetectionSample:
    """A (C, height, width) 2x2 mosaic of 4 samples around a random centre in the middle half of the canvas.

    Each image is resized (aspect kept) to cover its cell and cropped around its own centre, so what is in
    the middle of an image stays in view; boxes are scaled, clipped to the cell and filtered by min size.
    """
    if len(samples) != 4:
        raise ValueError(f"mosaic needs 4 samples, got {len(samples)}")
    height, width = size
    centre_x = int(width * (0.25 + 0.5 * _uniform(generator)))
    centre_y = int(height * (0.25 + 0.5 * _uniform(generator)))
    cells = [(0, 0, centre_x, centre_y), (centre_x, 0, width, centre_y)]
    cells += [(0, centre_y, centre_x, height), (centre_x, centre_y, width, height)]  # x1, y1, x2, y2
    first = samples[0][0]
    canvas = torch.full((first.shape[0], height, width), LETTERBOX_FILL, dtype=first.dtype, device=first.device)
    all_boxes, all_labels = [], []
    for (image, boxes, labels), (x1, y1, x2, y2) in zip(samples, cells, strict=True):
        cell_w, cell_h = x2 - x1, y2 - y1
        if cell_w == 0 or cell_h == 0:
            continue
        image_h, image_w = image.shape[-2:]
        cover = max(cell_h / image_h, cell_w / image_w)
        resized_w, resized_h = max(cell_w, round(image_w * cover)), max(cell_h, round(image_h * cover))
        resized = TF.resize(image, [resized_h, resized_w], antialias=True)
        left, top = (resized_w - cell_w) // 2, (resized_h - cell_h) // 2
        canvas[:, y1:y2, x1:x2] = resized[:, top : top + cell_h, left : left + cell_w]
        factors = boxes.new_tensor([resized_w / image_w, resized_h / image_h] * 2)
        shift = boxes.new_tensor([x1 - left, y1 - top] * 2)
        kept, kept_labels = filter_boxes(boxes * factors + shift, labels, (x1, y1, x2, y2), min_box_size)
        all_boxes.append(kept)
        all_labels.append(kept_labels)
    return canvas, torch.cat(all_boxes), torch.cat(all_labels)


def mixup(a: DetectionSample, b: DetectionSample, ratio: float, size: tuple[int, int] | None = None) -> DetectionSample:
    """`ratio * a + (1 - ratio) * b`, both letterboxed to `size` (default a's), with the boxes of both."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mixup ratio must be in [0, 1], got {ratio}")
    height, width = a[0].shape[-2:]
    size = size or (height, width)
    image_a, placement_a = letterbox(a[0], size)
    image_b, placement_b = letterbox(b[0], size)
    blend = ratio * image_a.float() + (1 - ratio) * image_b.float()
    image = blend.round().to(image_a.dtype) if not image_a.is_floating_point() else blend.to(image_a.dtype)
    boxes = torch.cat([placement_a.boxes_to_letterbox(a[1]), placement_b.boxes_to_letterbox(b[1])])
    return image, boxes, torch.cat([a[2], b[2]])


def random_train_size(
    base: tuple[int, int],
    scale_range: tuple[float, float],
    stride: int = 32,
    generator: torch.Generator | None = None,
) -> tuple[int, int]:
    """A random (height, width) for one multi-scale batch: base scaled by U(low, high), each a multiple of stride.

    Both sides use the same factor, so the aspect ratio is kept to within one stride of rounding.
    """
    low, high = scale_range
    if not 0.0 < low <= high:
        raise ValueError(f"scale_range needs 0 < low <= high, got {scale_range}")
    factor = low + (high - low) * _uniform(generator)
    height, width = (max(stride, round(side * factor / stride) * stride) for side in base)
    return height, width
