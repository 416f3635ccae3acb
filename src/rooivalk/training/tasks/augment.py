"""Seeded batch augmentations on float images in [0, 1], applied before normalization.

Geometry and colour use torchvision's v2 functional ops; fog, rain and motion blur (what a
counter-drone camera sees outdoors) are plain torch. Every parameter is drawn per sample from the
caller's generator in a fixed order, so a resumed run replays the same augmented batches.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from rooivalk.plan import AugmentSpec

FOG_STRENGTH = (0.2, 0.5)
RAIN_DENSITY = (0.002, 0.01)
BLUR_LENGTHS = (3, 5, 7, 9)


class _Draw:
    """Scalar draws from one generator (on its device); floats and ints for the functional ops."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.generator, device=self.generator.device))

    def chance(self, probability: float) -> bool:
        # Always draws, so one effect's probability never shifts the numbers another effect gets.
        return self.uniform() < probability

    def integer(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator, device=self.generator.device))

    def tensor(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=self.generator.device)


def line_kernel(length: int, angle_deg: float) -> torch.Tensor:
    """(length, length) kernel of ones on a line through the centre at `angle_deg` (0 = horizontal)."""
    centre = (length - 1) / 2
    angle = math.radians(angle_deg)
    t = torch.linspace(-centre, centre, 4 * length)  # dense samples so the rounded line has no gaps
    rows = (centre - t * math.sin(angle)).round().long().clamp(0, length - 1)
    cols = (centre + t * math.cos(angle)).round().long().clamp(0, length - 1)
    kernel = torch.zeros(length, length)
    kernel[rows, cols] = 1.0
    return kernel


def _depthwise(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """image (C, H, W) convolved per channel with kernel (k, k), k odd; borders replicated."""
    channels, size = image.shape[0], kernel.shape[-1]
    weight = kernel.to(image).expand(channels, 1, size, size)  # (C, 1, k, k): one filter per channel
    padded = F.pad(image[None], [size // 2] * 4, mode="replicate")  # (1, C, H + k - 1, W + k - 1)
    return F.conv2d(padded, weight, groups=channels)[0]


def random_resized_crop(
    image: torch.Tensor, scale: tuple[float, float], draw: _Draw, ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> torch.Tensor:
    """torchvision's RandomResizedCrop with the generator's numbers (its get_params uses the global RNG)."""
    height, width = image.shape[-2:]
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        area = height * width * draw.uniform(*scale)
        aspect = math.exp(draw.uniform(*log_ratio))
        crop_w, crop_h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top, left = draw.integer(height - crop_h + 1), draw.integer(width - crop_w + 1)
            cropped: torch.Tensor = TF.resized_crop(image, top, left, crop_h, crop_w, [height, width], antialias=True)
            return cropped
    return image  # no crop fits the scale and ratio: keep the whole image


def fog(image: torch.Tensor, draw: _Draw) -> torch.Tensor:
    """Blend toward light gray through a smooth haze mask (4x4 noise upsampled: thicker in patches)."""
    strength = draw.uniform(*FOG_STRENGTH)
    gray = draw.uniform(0.7, 0.9)
    noise = draw.tensor(1, 1, 4, 4).to(image)
    haze = F.interpolate(noise, size=image.shape[-2:], mode="bicubic", align_corners=False)[0].clamp(0, 1)
    mask = strength * (0.5 + 0.5 * haze)  # (1, H, W), in [strength / 2, strength]
    return image * (1 - mask) + gray * mask


def rain(image: torch.Tensor, draw: _Draw) -> torch.Tensor:
    """Thin bright slanted streaks: sparse drops smeared along one slanted line, added and clipped."""
    height, width = image.shape[-2:]
    density = draw.uniform(*RAIN_DENSITY)
    length = 2 * min(max(min(height, width) // 16, 1), 7) + 1  # odd, about 1/8 of the image, 15 px at most
    angle = 90.0 + draw.uniform(-20.0, 20.0)  # near vertical
    brightness = draw.uniform(0.5, 0.8)
    drops = (draw.tensor(1, height, width) < density).to(image)  # (1, H, W)
    streaks = _depthwise(drops, line_kernel(length, angle)).clamp(0, 1)
    return (image + brightness * streaks).clamp(0, 1)


def motion_blur(image: torch.Tensor, draw: _Draw) -> torch.Tensor:
    """Average along a random-angle line of 3 to 9 pixels: the camera or the target moved."""
    length = BLUR_LENGTHS[draw.integer(len(BLUR_LENGTHS))]
    kernel = line_kernel(length, draw.uniform(0.0, 180.0))
    return _depthwise(image, kernel / kernel.sum())


class BatchAugment:
    """`__call__(images (B, C, H, W) float in [0, 1], generator) -> augmented images, same shape and layout`."""

    def __init__(self, spec: AugmentSpec) -> None:
        self.spec = spec

    @property
    def enabled(self) -> bool:
        spec = self.spec
        effects = (spec.hflip, spec.vflip, spec.rotation, spec.color_jitter, spec.grayscale)
        return spec.random_resized_crop is not None or any(
            value > 0 for value in (*effects, spec.fog, spec.rain, spec.motion_blur)
        )

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not self.enabled:
            return images
        draw = _Draw(generator)
        # The ops work per (C, H, W) image: per-sample parameters, and batches here are small.
        out = torch.stack([self._one(image, draw) for image in images]).clamp_(0, 1)
        channels_last = images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out

    def _one(self, image: torch.Tensor, draw: _Draw) -> torch.Tensor:
        spec = self.spec
        if spec.random_resized_crop is not None:
            image = random_resized_crop(image, spec.random_resized_crop, draw)
        if draw.chance(spec.hflip):
            image = TF.horizontal_flip(image)
        if draw.chance(spec.vflip):
            image = TF.vertical_flip(image)
        if spec.rotation > 0:
            angle = draw.uniform(-spec.rotation, spec.rotation)
            image = TF.rotate(image, angle, interpolation=InterpolationMode.BILINEAR)
        if spec.color_jitter > 0:
            image = self._color_jitter(image, draw)
        if draw.chance(spec.grayscale) and image.shape[0] == 3:
            image = TF.rgb_to_grayscale(image, num_output_channels=3)
        if draw.chance(spec.fog):
            image = fog(image, draw)
        if draw.chance(spec.rain):
            image = rain(image, draw)
        if draw.chance(spec.motion_blur):
            image = motion_blur(image, draw)
        return image

    def _color_jitter(self, image: torch.Tensor, draw: _Draw) -> torch.Tensor:
        # Factors in [1 - s, 1 + s] as in torchvision's ColorJitter, applied in a fixed order.
        low, high = max(1.0 - self.spec.color_jitter, 0.0), 1.0 + self.spec.color_jitter
        brightness, contrast, saturation = draw.uniform(low, high), draw.uniform(low, high), draw.uniform(low, high)
        image = TF.adjust_brightness(image, brightness).clamp(0, 1)
        image = TF.adjust_contrast(image, contrast)
        return TF.adjust_saturation(image, saturation) if image.shape[0] == 3 else image
