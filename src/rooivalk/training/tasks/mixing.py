"""Mixup and CutMix on a training batch, every random choice drawn from the caller's generator.

Each sample is mixed with its partner in the reversed batch (timm's default pairing: no extra
randomness, and every pair is mixed both ways). Targets come back as class distributions without
label smoothing; the loss smooths them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from rooivalk.plan import MixSpec


def sample_beta(alpha: float, generator: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw, reproducible from `generator`.

    torch.distributions samples from the global RNG, so the generator seeds a one-off numpy RNG.
    """
    seed = int(torch.randint(2**31, (1,), generator=generator, device=generator.device))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _uniform(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator, device=generator.device))


def cutmix_box(lam: float, height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """A box (top, bottom, left, right) of about (1 - lam) of the image, centred anywhere, clipped to it."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(height, (1,), generator=generator, device=generator.device))
    cx = int(torch.randint(width, (1,), generator=generator, device=generator.device))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, width)
    return top, bottom, left, right


class MixupCutmix:
    """`__call__(images (B, C, H, W), labels (B,) int64, generator) -> (images, targets (B, num_classes))`."""

    def __init__(self, spec: MixSpec, num_classes: int) -> None:
        self.spec = spec
        self.num_classes = num_classes

    @property
    def enabled(self) -> bool:
        return self.spec.prob > 0 and (self.spec.mixup_alpha > 0 or self.spec.cutmix_alpha > 0)

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = images.dtype if images.is_floating_point() else torch.float32
        one_hot = F.one_hot(labels, self.num_classes).to(dtype)  # (B, num_classes)
        if not self.enabled or _uniform(generator) >= self.spec.prob:
            return images, one_hot
        use_cutmix = self.spec.cutmix_alpha > 0 and (
            self.spec.mixup_alpha == 0 or _uniform(generator) < self.spec.switch_prob
        )
        if use_cutmix:
            mixed, lam = self._cutmix(images, generator)
        else:
            lam = sample_beta(self.spec.mixup_alpha, generator)
            mixed = images * lam + images.flip(0) * (1.0 - lam)
        if images.is_contiguous(memory_format=torch.channels_last):
            mixed = mixed.contiguous(memory_format=torch.channels_last)
        return mixed, one_hot * lam + one_hot.flip(0) * (1.0 - lam)

    def _cutmix(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, float]:
        height, width = images.shape[-2:]
        top, bottom, left, right = cutmix_box(sample_beta(self.spec.cutmix_alpha, generator), height, width, generator)
        mixed = images.clone()
        mixed[..., top:bottom, left:right] = images.flip(0)[..., top:bottom, left:right]
        # The clipped box may be smaller than asked for: lam is the share of each image actually kept.
        return mixed, 1.0 - (bottom - top) * (right - left) / (height * width)
