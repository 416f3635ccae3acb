"""Weighted boxes fusion (ensemble_boxes) of detection sets, and test-time augmentation: flipped,
rotated and rescaled views of an image whose predictions map back to it and are fused."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ensemble_boxes import weighted_boxes_fusion
from torchvision.transforms.v2 import functional as TF

from rooivalk.models.detection_metrics import Detections

MEMBERS_CONF = "box_and_model_avg"  # an ensemble's fused score (fuse_members); TTA views keep "avg"

__all__ = ["View", "fuse_detections", "fuse_members", "keep_best", "tta_predict", "tta_views"]


def fuse_detections(
    sets: Sequence[Detections],
    image_size: tuple[int, int],
    weights: Sequence[float] | None = None,
    iou_threshold: float = 0.55,
    skip_score: float = 0.0,
    conf_type: str = "avg",
) -> Detections:
    """Weighted boxes fusion of one image's detection sets (models or TTA views); image_size is
    (width, height). Boxes are clipped to the image; degenerate ones are dropped. conf_type is
    ensemble-boxes' ("avg": the cluster's mean score x the share of sets that found it, which exceeds 1
    with unequal weights; "box_and_model_avg": the weighted mean score x the weight share of the sets
    that found it, at most 1)."""
    if weights is not None and len(weights) != len(sets):
        raise ValueError(f"{len(weights)} weights for {len(sets)} detection sets")
    width, height = image_size
    scale = np.array([width, height, width, height], dtype=np.float64)
    boxes, scores, labels = [], [], []
    for detections in sets:
        # WBF wants [0, 1] coordinates and warns about (then skips) zero-area boxes: clip and drop here.
        normalized = np.clip(detections.boxes.astype(np.float64) / scale, 0.0, 1.0)  # (N, 4)
        keep = (normalized[:, 2] > normalized[:, 0]) & (normalized[:, 3] > normalized[:, 1])
        boxes.append(normalized[keep])
        scores.append(detections.scores[keep].astype(np.float64))
        labels.append(detections.labels[keep])
    if not any(len(b) for b in boxes):
        return Detections.empty()
    listed = None if weights is None else list(weights)
    fused_boxes, fused_scores, fused_labels = weighted_boxes_fusion(
        boxes, scores, labels, weights=listed, iou_thr=iou_threshold, skip_box_thr=skip_score, conf_type=conf_type
    )
    return Detections(np.asarray(fused_boxes) * scale, fused_scores, np.rint(fused_labels))


@dataclass(frozen=True, eq=False)
class View:
    """One TTA view: the original flipped left-right (optional), then rotated counter-clockwise by
    `rotation` degrees (torch.rot90 on H, W), then resized by `scale`."""

    image: torch.Tensor  # (C, H', W')
    hflip: bool
    rotation: int  # 0, 90, 180 or 270
    scale: float
    original_size: tuple[int, int]  # (width, height) of the original image

    @property
    def _rotated_size(self) -> tuple[int, int]:
        width, height = self.original_size
        return (height, width) if self.rotation % 180 else (width, height)

    def _resize_factors(self) -> np.ndarray:
        # Exact per-axis factors: the resized side is rounded to whole pixels.
        width, height = self._rotated_size
        return np.array([self.image.shape[-1] / width, self.image.shape[-2] / height] * 2)

    def boxes_to_view(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) x1, y1, x2, y2 in the original image -> the same boxes in this view."""
        width, height = self.original_size
        out: np.ndarray = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if self.hflip:
            out = np.stack([width - out[:, 2], out[:, 1], width - out[:, 0], out[:, 3]], axis=1)
        for _ in range(self.rotation // 90):
            # One counter-clockwise quarter turn of a (width, height) frame: (x, y) -> (y, width - x).
            out = np.stack([out[:, 1], width - out[:, 2], out[:, 3], width - out[:, 0]], axis=1)
            width, height = height, width
        scaled: np.ndarray = out * self._resize_factors()
        return scaled

    def boxes_to_original(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) x1, y1, x2, y2 predicted on this view -> the same boxes in the original image."""
        out: np.ndarray = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / self._resize_factors()
        width, height = self._rotated_size
        for _ in range(self.rotation // 90):
            # Undo one quarter turn, the frame going back from (width, height) to (height, width):
            # (x', y') -> (height - y', x').
            out = np.stack([height - out[:, 3], out[:, 0], height - out[:, 1], out[:, 2]], axis=1)
            width, height = height, width
        if self.hflip:
            out = np.stack([width - out[:, 2], out[:, 1], width - out[:, 0], out[:, 3]], axis=1)
        return out


def _view(image: torch.Tensor, hflip: bool, rotation: int, scale: float) -> View:
    height, width = image.shape[-2:]
    view = torch.flip(image, dims=[-1]) if hflip else image
    view = torch.rot90(view, k=rotation // 90, dims=(-2, -1))  # counter-clockwise, as (x, y) -> (y, W - x)
    if scale != 1.0:
        size = [max(1, round(view.shape[-2] * scale)), max(1, round(view.shape[-1] * scale))]
        view = TF.resize(view, size, antialias=True)
    return View(view, hflip, rotation, scale, (int(width), int(height)))


def tta_views(
    image: torch.Tensor,
    hflip: bool = False,
    rotations: Sequence[int] = (0,),
    scales: Sequence[float] = (1.0,),
) -> list[View]:
    """Every combination of (no flip, and a flip if hflip) x rotations (degrees, multiples of 90) x
    scales, of a (C, H, W) image; the identity view is included only where 0 and 1.0 are listed."""
    if any(r % 90 for r in rotations):
        raise ValueError(f"rotations must be multiples of 90 degrees, got {list(rotations)}")
    if any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive, got {list(scales)}")
    flips = [False, True] if hflip else [False]
    return [
        _view(image, flip, rotation % 360, float(scale))
        for flip, rotation, scale in itertools.product(flips, rotations or [0], scales or [1.0])
    ]


def keep_best(detections: Detections, count: int) -> Detections:
    """The `count` highest-scoring detections: fusing several sets can give more boxes than one model
    keeps (its max_detections), and COCO mAP counts only the best 100 per image."""
    order = np.argsort(-detections.scores, kind="stable")[:count]
    return Detections(detections.boxes[order], detections.scores[order], detections.labels[order])


def tta_predict(
    predict: Callable[[torch.Tensor], Detections],
    image: torch.Tensor,
    hflip: bool = False,
    rotations: Sequence[int] = (0,),
    scales: Sequence[float] = (1.0,),
    weights: Sequence[float] | None = None,
    iou_threshold: float = 0.55,
    skip_score: float = 0.0,
) -> Detections:
    """`predict` on every view of tta_views (weights: one per view, in its order), boxes mapped back
    to the (C, H, W) image and fused with weighted boxes fusion."""
    views = tta_views(image, hflip, rotations, scales)
    sets = []
    for view in views:
        detections = predict(view.image)
        sets.append(Detections(view.boxes_to_original(detections.boxes), detections.scores, detections.labels))
    height, width = image.shape[-2:]
    return fuse_detections(sets, (int(width), int(height)), weights, iou_threshold, skip_score)


def fuse_members(
    per_member: Sequence[Sequence[Detections]],
    image_sizes: Sequence[tuple[int, int]],
    weights: Sequence[float] | None,
    iou_threshold: float,
    most: int,
) -> list[Detections]:
    """An ensemble's detections: per image (image_sizes: (width, height) each), the members' sets fused by
    weighted boxes fusion, the `most` best kept. per_member[k][i]: member k's detections of image i.

    A fused score is the members' weighted mean score times the weight share of the members that found
    the box ("box_and_model_avg"): a box all members find keeps their mean, one that one member of three
    finds a third of its score; at most 1, whatever the weights."""
    if any(len(found) != len(image_sizes) for found in per_member):
        raise ValueError(f"members found {[len(f) for f in per_member]} images' detections for {len(image_sizes)}")
    return [
        keep_best(
            fuse_detections([found[i] for found in per_member], size, weights, iou_threshold, conf_type=MEMBERS_CONF),
            most,
        )
        for i, size in enumerate(image_sizes)
    ]
