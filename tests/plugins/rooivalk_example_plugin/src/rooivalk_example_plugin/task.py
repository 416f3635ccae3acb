"""The `example_noisy_images` task: image classification whose training images get seeded sensor noise.

A task plugin subclasses `rooivalk.training.tasks.Task`, or one of the built-in tasks to change one
part of it: here the image task, with Gaussian noise (std `NOISE_STD`) added to every training
image in [0, 1] before normalization. The noise draws from the step's generator, so a resumed run
adds the same noise; validation, caching and statistics passes (no generator) see clean images.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from rooivalk.training.tasks import ImageClassification
from rooivalk.training.tasks.image_input import InputSpec

NOISE_STD = 0.05


class NoisyImages(ImageClassification):
    name: ClassVar[str] = "example_noisy_images"  # the entry point's name, and what a family's task names

    def unit_batch(self, index: np.ndarray, inputs: InputSpec, generator: torch.Generator | None) -> torch.Tensor:
        batch = super().unit_batch(index, inputs, generator)  # (B, C, S, S) in [0, 1], augmented
        if generator is None:
            return batch
        noise = torch.randn(batch.shape, generator=generator) * NOISE_STD
        return (batch + noise).clamp_(0.0, 1.0)
