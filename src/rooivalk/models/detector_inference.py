"""A detector's inference on images of any size: decode, letterbox, detect, boxes back in image pixels.

Shared by the detection task's validation, evaluation and the export checks, so that every score of a
detector comes from the same preprocessing: RGB uint8 -> letterboxed to the model's input (aspect kept,
padded with grey) -> float in [0, 1]; the model normalizes with its backbone's mean and std.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from rooivalk import storage
from rooivalk.models.detection_metrics import Detections
from rooivalk.models.letterbox import Letterbox, letterbox

IMAGE_CACHE_BYTES = 1 << 30  # decoded images kept in memory (uint8): a small dataset decodes once


def read_rgb(uri: str) -> torch.Tensor:
    """An image file as uint8 (3, H, W); grayscale repeated to three channels (the backbone's input)."""
    with Image.open(io.BytesIO(storage.read_bytes(uri))) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


class ImageCache:
    """Decoded images by URI, least recently used dropped past `limit` bytes."""

    def __init__(self, limit: int = IMAGE_CACHE_BYTES) -> None:
        self.limit = limit
        self.size = 0
        self.images: OrderedDict[str, torch.Tensor] = OrderedDict()

    def get(self, uri: str) -> torch.Tensor:
        if uri in self.images:
            self.images.move_to_end(uri)
            return self.images[uri]
        image = read_rgb(uri)
        self.images[uri] = image
        self.size += image.numel()
        while self.size > self.limit and len(self.images) > 1:
            _, dropped = self.images.popitem(last=False)
            self.size -= dropped.numel()
        return image


def letterboxed_batch(images: Sequence[torch.Tensor], size: tuple[int, int]) -> tuple[torch.Tensor, list[Letterbox]]:
    """uint8 images (3, H_i, W_i) -> float (B, 3, height, width) in [0, 1] and each image's placement."""
    boxed = [letterbox(image, size) for image in images]
    return torch.stack([image for image, _ in boxed]).float().div_(255), [placement for _, placement in boxed]


def detect_images(
    model: nn.Module,
    load: Callable[[int], torch.Tensor],
    count: int,
    size: tuple[int, int],
    batch_size: int,
    device: torch.device | None = None,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> list[Detections]:
    """The model's detections on images `load(0..count-1)`, letterboxed to `size` (height, width), in each
    image's own pixels. The model is put in eval mode."""
    device = device or torch.device("cpu")
    found: list[Detections] = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, count, batch_size):
            images, placements = letterboxed_batch(
                [load(i) for i in range(start, min(start + batch_size, count))], size
            )
            with autocast():
                outputs = model(images.to(device))
            for output, placement in zip(outputs, placements, strict=True):
                found.append(
                    Detections(
                        placement.boxes_to_original(output["boxes"].float().cpu()).numpy(),
                        output["scores"].float().cpu().numpy(),
                        output["labels"].cpu().numpy(),
                    )
                )
    return found
