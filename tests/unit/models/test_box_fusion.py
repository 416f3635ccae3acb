"""Weighted boxes fusion and test-time augmentation views: boxes go through every view and back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rooivalk.models.box_fusion import View, fuse_detections, tta_predict, tta_views
from rooivalk.models.detection_metrics import Detections

WIDTH, HEIGHT = 64, 48
BOXES = np.array([[4.0, 6.0, 20.0, 30.0], [33.0, 2.0, 60.0, 14.0], [0.0, 0.0, 64.0, 48.0]])


def _set(boxes: np.ndarray, scores: list[float], labels: list[int]) -> Detections:
    return Detections(boxes, scores, labels)


def _all_views(image: torch.Tensor) -> list[View]:
    return tta_views(image, hflip=True, rotations=[0, 90, 180, 270], scales=[1.0, 0.5, 1.5])


def test_fusing_identical_sets_returns_the_same_boxes() -> None:
    detections = _set(BOXES[:2], [0.9, 0.6], [0, 1])
    fused = fuse_detections([detections, detections], (WIDTH, HEIGHT), weights=None)
    np.testing.assert_allclose(fused.boxes, detections.boxes, atol=1e-3)
    np.testing.assert_allclose(fused.scores, detections.scores, atol=1e-6)
    np.testing.assert_array_equal(fused.labels, detections.labels)
    assert fused.boxes.dtype == np.float32
    assert fused.labels.dtype == np.int64


def test_fusion_averages_by_score_and_weight() -> None:
    first = _set(np.array([[10.0, 10.0, 30.0, 30.0]]), [0.8], [0])
    second = _set(np.array([[12.0, 10.0, 32.0, 30.0]]), [0.4], [0])
    other_class = _set(np.array([[12.0, 10.0, 32.0, 30.0]]), [0.4], [1])
    fused = fuse_detections([first, second], (WIDTH, HEIGHT), weights=[1.0, 1.0])
    # x1 is the score-weighted mean: (0.8 * 10 + 0.4 * 12) / 1.2; the score their mean.
    np.testing.assert_allclose(
        fused.boxes, [[(0.8 * 10 + 0.4 * 12) / 1.2, 10, (0.8 * 30 + 0.4 * 32) / 1.2, 30]], atol=1e-3
    )
    np.testing.assert_allclose(fused.scores, [0.6], atol=1e-6)
    weighted = fuse_detections([first, second], (WIDTH, HEIGHT), weights=[3.0, 1.0])
    np.testing.assert_allclose(weighted.boxes[0, 0], (2.4 * 10 + 0.4 * 12) / 2.8, atol=1e-3)
    # Different classes never fuse.
    assert len(fuse_detections([first, other_class], (WIDTH, HEIGHT))) == 2


def test_fusion_of_empty_sets_and_clipping() -> None:
    assert len(fuse_detections([Detections.empty(), Detections.empty()], (WIDTH, HEIGHT))) == 0
    assert len(fuse_detections([], (WIDTH, HEIGHT))) == 0
    outside = _set(np.array([[-5.0, 40.0, 70.0, 60.0], [70.0, 0.0, 80.0, 10.0]]), [0.9, 0.9], [0, 0])
    fused = fuse_detections([outside, Detections.empty()], (WIDTH, HEIGHT))
    # Clipped to the image; the box wholly outside it is dropped.
    np.testing.assert_allclose(fused.boxes, [[0, 40, WIDTH, HEIGHT]], atol=1e-3)
    with pytest.raises(ValueError, match="1 weights for 2 detection sets"):
        fuse_detections([outside, outside], (WIDTH, HEIGHT), weights=[1.0])


def test_views_combine_flips_rotations_and_scales() -> None:
    image = torch.rand(3, HEIGHT, WIDTH)
    views = _all_views(image)
    assert len(views) == 2 * 4 * 3
    for view in views:
        turned = view.rotation in (90, 270)
        expected = (HEIGHT, WIDTH) if not turned else (WIDTH, HEIGHT)
        assert view.image.shape == (3, round(expected[0] * view.scale), round(expected[1] * view.scale))
    identity = tta_views(image)
    assert len(identity) == 1
    assert torch.equal(identity[0].image, image)
    with pytest.raises(ValueError, match="multiples of 90"):
        tta_views(image, rotations=[45])


def test_boxes_round_trip_through_every_view() -> None:
    for view in _all_views(torch.rand(1, HEIGHT, WIDTH)):
        np.testing.assert_allclose(view.boxes_to_original(view.boxes_to_view(BOXES)), BOXES, atol=1e-4)
        # And the view's boxes are inside the view.
        mapped = view.boxes_to_view(BOXES)
        assert (mapped >= -1e-9).all()
        assert (mapped[:, [0, 2]] <= view.image.shape[-1] + 1e-9).all()
        assert (mapped[:, [1, 3]] <= view.image.shape[-2] + 1e-9).all()


def _painted(box: np.ndarray) -> torch.Tensor:
    image = torch.zeros(1, HEIGHT, WIDTH)
    x1, y1, x2, y2 = box.astype(int)
    image[:, y1:y2, x1:x2] = 1.0
    return image


def _bright_box(image: torch.Tensor) -> np.ndarray:
    rows = torch.nonzero(image[0] > 0.5)  # (K, 2) row, column
    return np.array([rows[:, 1].min(), rows[:, 0].min(), rows[:, 1].max() + 1, rows[:, 0].max() + 1], dtype=float)


def test_box_mapping_follows_the_pixels() -> None:
    # A painted rectangle's bounding box in each view is where boxes_to_view puts the box: the mapping
    # is the image transform's, not merely self-consistent.
    box = np.array([5.0, 7.0, 21.0, 13.0])
    for view in tta_views(_painted(box), hflip=True, rotations=[0, 90, 180, 270], scales=[1.0, 2.0]):
        np.testing.assert_allclose(_bright_box(view.image), view.boxes_to_view(box[None])[0], atol=1.0)
        if view.scale == 1.0:
            np.testing.assert_array_equal(_bright_box(view.image), view.boxes_to_view(box[None])[0])


def test_tta_predict_maps_back_and_fuses() -> None:
    box = np.array([5.0, 7.0, 21.0, 13.0])

    def predict(image: torch.Tensor) -> Detections:
        # A perfect detector: the bright rectangle's box in the frame it is given.
        return Detections(_bright_box(image)[None], [0.8], [1])

    fused = tta_predict(predict, _painted(box), hflip=True, rotations=[0, 90, 180, 270])
    assert len(fused) == 1
    np.testing.assert_allclose(fused.boxes[0], box, atol=1e-3)
    np.testing.assert_allclose(fused.scores, [0.8], atol=1e-6)
    assert fused.labels.tolist() == [1]
    with pytest.raises(ValueError, match="1 weights for 8 detection sets"):
        tta_predict(predict, _painted(box), hflip=True, rotations=[0, 90, 180, 270], weights=[1.0])
