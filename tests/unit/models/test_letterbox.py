"""Letterboxing (rooivalk.models.letterbox): aspect kept, padding centred, boxes map both ways exactly."""

from __future__ import annotations

import pytest
import torch

from rooivalk.models.letterbox import LETTERBOX_FILL, Letterbox, letterbox


def _white_rectangle(height: int, width: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    """(3, height, width) uint8 black image with box (x1, y1, x2, y2) painted white."""
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 255
    return image


def _white_bbox(image: torch.Tensor) -> torch.Tensor:
    """x1, y1, x2, y2 of the pixels brighter than mid grey in every channel (the padding is 114)."""
    ys, xs = torch.nonzero((image > 127).all(dim=0), as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


@pytest.mark.parametrize("size", [(384, 640), (640, 384)])
@pytest.mark.parametrize("original", [(90, 160), (160, 90), (100, 100), (37, 211)])
def test_box_round_trip_is_exact(size: tuple[int, int], original: tuple[int, int]) -> None:
    height, width = original
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    canvas, placement = letterbox(image, size)
    assert canvas.shape == (3, *size)
    assert canvas.dtype == torch.uint8
    corners = torch.rand(20, 2, 2, generator=torch.Generator().manual_seed(1)) * torch.tensor([width, height])
    boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=1)  # (20, 4) inside the image
    back = placement.boxes_to_original(placement.boxes_to_letterbox(boxes))
    torch.testing.assert_close(back, boxes, atol=1e-4, rtol=0)


def test_padding_is_centred_and_filled() -> None:
    canvas, placement = letterbox(torch.zeros(3, 100, 200, dtype=torch.uint8), (384, 640))
    assert placement == Letterbox(scale_x=3.2, scale_y=3.2, pad_x=0, pad_y=32, original=(200, 100))
    assert bool((canvas[:, :32] == LETTERBOX_FILL).all())
    assert bool((canvas[:, -32:] == LETTERBOX_FILL).all())
    assert bool((canvas[:, 32:-32] == 0).all())  # the resized image fills the middle band exactly


@pytest.mark.parametrize("size", [(384, 640), (640, 384)])
def test_mapped_box_lands_on_its_object(size: tuple[int, int]) -> None:
    box = (30, 20, 90, 50)
    canvas, placement = letterbox(_white_rectangle(120, 160, box), size)
    mapped = placement.boxes_to_letterbox(torch.tensor([box], dtype=torch.float32))[0]
    torch.testing.assert_close(mapped, _white_bbox(canvas), atol=2.0, rtol=0)


def test_boxes_on_the_padding_clip_to_the_original() -> None:
    _, placement = letterbox(torch.zeros(3, 100, 200, dtype=torch.uint8), (384, 640))
    on_padding = torch.tensor([[-10.0, 0.0, 700.0, 20.0], [100.0, 300.0, 200.0, 384.0]])
    back = placement.boxes_to_original(on_padding)
    assert bool((back[:, 0::2] >= 0).all())
    assert bool((back[:, 0::2] <= 200).all())
    assert bool((back[:, 1::2] >= 0).all())
    assert bool((back[:, 1::2] <= 100).all())
    torch.testing.assert_close(back[0], torch.tensor([0.0, 0.0, 200.0, 0.0]))


def test_same_size_is_identity_and_batches_are_refused() -> None:
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    canvas, placement = letterbox(image, (64, 96))
    assert torch.equal(canvas, image)
    assert (placement.scale_x, placement.scale_y, placement.pad_x, placement.pad_y) == (1.0, 1.0, 0, 0)
    with pytest.raises(ValueError, match="one"):
        letterbox(image[None], (64, 96))


def test_each_axis_maps_with_its_own_rounded_scale() -> None:
    # 333 x 101 into 64 x 96: scale 96/333 gives a height of 29.12 rows, drawn as 29: a box on the
    # image's bottom edge must land on the resized image's bottom row, not 0.12 px below it.
    image = torch.zeros(3, 101, 333, dtype=torch.uint8)
    canvas, placement = letterbox(image, (64, 96))
    assert canvas.shape == (3, 64, 96)
    edge = placement.boxes_to_letterbox(torch.tensor([[0.0, 0.0, 333.0, 101.0]]))
    assert edge[0, 2].item() == pytest.approx(placement.pad_x + 96)
    assert edge[0, 3].item() == pytest.approx(placement.pad_y + 29)
