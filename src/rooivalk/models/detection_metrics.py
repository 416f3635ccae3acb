"""Object-detection metrics: COCO mAP (torchmetrics on pycocotools) and precision/recall/F1 at score
thresholds, from one prediction set kept at a low score threshold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = ["Detections", "GroundTruth", "detection_metrics", "operating_points", "true_positives"]


def _boxes(values: object) -> np.ndarray:
    boxes = np.asarray(values, dtype=np.float32).reshape(-1, 4)
    if not np.isfinite(boxes).all() or (boxes[:, 2:] < boxes[:, :2]).any():
        raise ValueError("boxes must be finite x1, y1, x2, y2 with x2 >= x1 and y2 >= y1")
    return boxes


def _labels(values: object, rows: int) -> np.ndarray:
    labels = np.asarray(values, dtype=np.int64).reshape(-1)
    if labels.shape != (rows,):
        raise ValueError(f"{labels.shape[0]} labels for {rows} boxes")
    return labels


@dataclass(frozen=True, eq=False)
class Detections:
    """One image's predicted boxes; arrays are coerced to the dtypes below."""

    boxes: np.ndarray  # float32 (N, 4): absolute pixel x1, y1, x2, y2
    scores: np.ndarray  # float32 (N,)
    labels: np.ndarray  # int64 (N,): class indices

    def __post_init__(self) -> None:
        boxes = _boxes(self.boxes)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if scores.shape != (len(boxes),):
            raise ValueError(f"{scores.shape[0]} scores for {len(boxes)} boxes")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", _labels(self.labels, len(boxes)))

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0))

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """One image's annotated boxes; (0, 4) for a negative image."""

    boxes: np.ndarray  # float32 (M, 4): absolute pixel x1, y1, x2, y2
    labels: np.ndarray  # int64 (M,): class indices

    def __post_init__(self) -> None:
        boxes = _boxes(self.boxes)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "labels", _labels(self.labels, len(boxes)))

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True)
class _Matches:
    """Every detection of a set, flagged true positive or not by greedy matching over all of them."""

    scores: np.ndarray  # float32 (D,): all detections of all images
    true_positive: np.ndarray  # bool (D,)
    ground_truths: int
    images: int

    def at(self, score_threshold: float) -> dict[str, float]:
        # Greedy matching runs in descending score order, so the matches of the detections at or above
        # a threshold are those of the full run: one matching serves every threshold.
        kept = self.scores >= score_threshold
        detections = int(kept.sum())
        true_positives = int((self.true_positive & kept).sum())
        precision = true_positives / detections if detections else 0.0
        recall = true_positives / self.ground_truths if self.ground_truths else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        return {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "detections_per_image": detections / self.images if self.images else 0.0,
        }


def _check(predictions: Sequence[Detections], targets: Sequence[GroundTruth], class_names: Sequence[str]) -> None:
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} prediction sets for {len(targets)} images")
    items: list[Detections | GroundTruth] = [*predictions, *targets]
    for item in items:
        if len(item) and (item.labels.min() < 0 or item.labels.max() >= len(class_names)):
            raise ValueError(f"a label outside the {len(class_names)} classes {list(class_names)}")


def _match_image(prediction: Detections, target: GroundTruth, iou_threshold: float) -> np.ndarray:
    """bool (N,) in the prediction's order: each detection, highest score first, takes the unmatched
    same-class ground truth it overlaps most when that IoU >= iou_threshold."""
    matched = np.zeros(len(prediction), dtype=bool)
    if not len(prediction) or not len(target):
        return matched
    ious = box_iou(torch.from_numpy(prediction.boxes), torch.from_numpy(target.boxes)).numpy()  # (N, M)
    taken = np.zeros(len(target), dtype=bool)
    for index in np.argsort(-prediction.scores, kind="stable"):
        candidates = np.where((target.labels == prediction.labels[index]) & ~taken, ious[index], -1.0)  # (M,)
        best = int(candidates.argmax())
        if candidates[best] >= iou_threshold:
            taken[best] = matched[index] = True
    return matched


def _match(predictions: Sequence[Detections], targets: Sequence[GroundTruth], iou_threshold: float) -> _Matches:
    flags = [_match_image(p, t, iou_threshold) for p, t in zip(predictions, targets, strict=True)]
    return _Matches(
        scores=np.concatenate([p.scores for p in predictions] or [np.zeros(0, np.float32)]),
        true_positive=np.concatenate(flags or [np.zeros(0, bool)]),
        ground_truths=sum(len(t) for t in targets),
        images=len(targets),
    )


def _coco_map(
    predictions: Sequence[Detections], targets: Sequence[GroundTruth]
) -> tuple[float, float, dict[int, float]]:
    """(mAP@0.5:0.95, mAP@0.5, {class index: AP@0.5}) from torchmetrics' MeanAveragePrecision on
    pycocotools; classes without ground truth get no AP (COCO's -1)."""
    if not any(len(t) for t in targets):
        return 0.0, 0.0, {}  # nothing to find: COCO gives -1 everywhere, reported as 0 rather than NaN
    preds = [
        {"boxes": torch.from_numpy(p.boxes), "scores": torch.from_numpy(p.scores), "labels": torch.from_numpy(p.labels)}
        for p in predictions
    ]
    gts = [{"boxes": torch.from_numpy(t.boxes), "labels": torch.from_numpy(t.labels)} for t in targets]
    from torchmetrics.detection import MeanAveragePrecision  # on use: it loads pycocotools

    coco = MeanAveragePrecision(iou_type="bbox", backend="pycocotools")
    coco.update(preds, gts)
    summary = coco.compute()
    # A second instance at the single IoU 0.5: its per-class mAP is each class's AP@0.5.
    at_50 = MeanAveragePrecision(iou_type="bbox", backend="pycocotools", iou_thresholds=[0.5], class_metrics=True)
    at_50.update(preds, gts)
    per_class = at_50.compute()
    with_truth = set(np.concatenate([t.labels for t in targets]).tolist())
    classes = per_class["classes"].reshape(-1).tolist()
    values = per_class["map_per_class"].reshape(-1).tolist()
    ap50 = {int(c): max(float(v), 0.0) for c, v in zip(classes, values, strict=True) if c in with_truth}
    return max(float(summary["map"]), 0.0), max(float(summary["map_50"]), 0.0), ap50


def detection_metrics(
    predictions: Sequence[Detections],
    targets: Sequence[GroundTruth],
    class_names: Sequence[str],
    score_threshold: float,
    iou_threshold: float = 0.5,
) -> dict[str, float]:
    """`map50`, `map` (COCO mAP@0.5:0.95) and `ap50/<class>` over all predictions; `precision`,
    `recall`, `f1` over those scoring >= score_threshold, matched at iou_threshold."""
    _check(predictions, targets, class_names)
    mean_ap, map50, ap50 = _coco_map(predictions, targets)
    counts = _match(predictions, targets, iou_threshold).at(score_threshold)
    return {
        "map50": map50,
        "map": mean_ap,
        **{f"ap50/{class_names[index]}": ap50[index] for index in sorted(ap50)},
        "precision": counts["precision"],
        "recall": counts["recall"],
        "f1": counts["f1"],
    }


def operating_points(
    predictions: Sequence[Detections],
    targets: Sequence[GroundTruth],
    class_names: Sequence[str],
    thresholds: Mapping[str, float],
    iou_threshold: float = 0.5,
) -> dict[str, dict[str, float]]:
    """For each named score threshold (e.g. {"recall": 0.15, "balanced": 0.25, "precision": 0.4}): its
    `score_threshold`, `precision`, `recall`, `f1` and `detections_per_image`, side by side."""
    _check(predictions, targets, class_names)
    matches = _match(predictions, targets, iou_threshold)
    return {name: {"score_threshold": float(t), **matches.at(t)} for name, t in thresholds.items()}


def true_positives(
    predictions: Sequence[Detections], targets: Sequence[GroundTruth], iou_threshold: float = 0.5
) -> list[np.ndarray]:
    """bool (N,) per image, in each prediction's order: True where the detection takes a same-class ground
    truth at IoU >= iou_threshold under the greedy matching of `detection_metrics`."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} prediction sets for {len(targets)} images")
    return [_match_image(p, t, iou_threshold) for p, t in zip(predictions, targets, strict=True)]
