"""Letterboxing: resize an image to fit a detector's input keeping its aspect ratio, pad the rest.

Training and inference share this module, so a box predicted on the letterboxed input maps back onto
the camera frame with exactly the transform the training data went through. It imports nothing from
rooivalk.training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import functional as TF

LETTERBOX_FILL = 114  # mid grey: the padding the YOLO family trains with, so pretrained weights see it too


@dataclass(frozen=True)
class Letterbox:
    """How an image of size `original` (w, h) was placed on the letterboxed canvas.

    A point (x, y) of the original lands at (x * scale_x + pad_x, y * scale_y + pad_y). The two scales
    are the resized sides over the original ones: the aspect-keeping scale, but for the rounding of
    each side to whole pixels (up to half a pixel over the image, which one shared scale would put on
    every box edge of the shorter axis).
    """

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    original: tuple[int, int]

    def _scales(self, boxes: torch.Tensor) -> torch.Tensor:
        return boxes.new_tensor([self.scale_x, self.scale_y, self.scale_x, self.scale_y])

    def boxes_to_letterbox(self, boxes: torch.Tensor) -> torch.Tensor:
        """(N, 4) x1, y1, x2, y2 in original pixels -> letterboxed pixels."""
        offset = boxes.new_tensor([self.pad_x, self.pad_y, self.pad_x, self.pad_y])
        return boxes * self._scales(boxes) + offset

    def boxes_to_original(self, boxes: torch.Tensor) -> torch.Tensor:
        """(N, 4) x1, y1, x2, y2 in letterboxed pixels -> original pixels, clipped to the original image.

        Boxes a detector puts on the padding clip to the image edge (possibly to zero width).
        """
        offset = boxes.new_tensor([self.pad_x, self.pad_y, self.pad_x, self.pad_y])
        original = (boxes - offset) / self._scales(boxes)
        width, height = self.original
        upper = boxes.new_tensor([width, height, width, height])
        return torch.minimum(original.clamp(min=0), upper)


def fit_scale(original: tuple[int, int], size: tuple[int, int]) -> tuple[float, int, int]:
    """(scale, resized width, resized height) fitting `original` (w, h) inside `size` (height, width)."""
    width, height = original
    scale = min(size[0] / height, size[1] / width)
    # Rounded sizes clamped to the canvas: float error must never make the resized image 1 px too big.
    resized_w = min(size[1], max(1, round(width * scale)))
    resized_h = min(size[0], max(1, round(height * scale)))
    return scale, resized_w, resized_h


def letterbox(
    image: torch.Tensor, size: tuple[int, int], fill: int | float = LETTERBOX_FILL
) -> tuple[torch.Tensor, Letterbox]:
    """Resize image (C, H, W) to fit `size` (height, width) keeping aspect ratio and pad it centred with `fill`.

    Returns the (C, height, width) canvas, same dtype as `image`, and the `Letterbox` that maps boxes.
    """
    if image.ndim != 3:
        raise ValueError(f"letterbox expects one (C, H, W) image, got shape {tuple(image.shape)}")
    height, width = image.shape[-2:]
    _, resized_w, resized_h = fit_scale((width, height), size)
    if (resized_h, resized_w) != (height, width):
        image = TF.resize(image, [resized_h, resized_w], antialias=True)
    # Integer padding split as evenly as possible (the odd pixel goes right/bottom), so pixels stay on the grid.
    pad_x = (size[1] - resized_w) // 2
    pad_y = (size[0] - resized_h) // 2
    canvas = torch.full((image.shape[0], *size), fill, dtype=image.dtype, device=image.device)
    canvas[:, pad_y : pad_y + resized_h, pad_x : pad_x + resized_w] = image
    placement = Letterbox(resized_w / width, resized_h / height, pad_x, pad_y, original=(width, height))
    return canvas, placement
