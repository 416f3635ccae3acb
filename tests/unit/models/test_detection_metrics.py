"""Detection metrics: COCO mAP through torchmetrics/pycocotools, greedy matching at a score threshold,
operating points from one prediction set."""

from __future__ import annotations

import numpy as np
import pytest

from rooivalk.models.detection_metrics import Detections, GroundTruth, detection_metrics, operating_points

CLASSES = ["drone", "bird", "plane"]


def _truth(*boxes: tuple[float, float, float, float, int]) -> GroundTruth:
    return GroundTruth(np.array([b[:4] for b in boxes]).reshape(-1, 4), [b[4] for b in boxes])


def _detections(*boxes: tuple[float, float, float, float, float, int]) -> Detections:
    return Detections(np.array([b[:4] for b in boxes]).reshape(-1, 4), [b[4] for b in boxes], [b[5] for b in boxes])


def _scene() -> list[GroundTruth]:
    """Three images: two drones and a bird; one drone; a negative."""
    return [
        _truth((10, 10, 50, 40, 0), (100, 80, 160, 120, 0), (200, 20, 230, 60, 1)),
        _truth((30, 30, 90, 70, 0)),
        _truth(),
    ]


def _perfect(targets: list[GroundTruth]) -> list[Detections]:
    return [Detections(t.boxes, np.full(len(t), 0.9), t.labels) for t in targets]


def test_perfect_predictions_score_one() -> None:
    targets = _scene()
    metrics = detection_metrics(_perfect(targets), targets, CLASSES, score_threshold=0.5)
    assert metrics == {
        "map50": 1.0,
        "map": 1.0,
        "ap50/drone": 1.0,
        "ap50/bird": 1.0,  # plane has no ground truth here: no key rather than NaN
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
    }


def test_a_box_at_iou_0_4_is_a_false_positive_at_0_5() -> None:
    targets = [_truth((0, 0, 10, 10, 0))]
    predictions = [_detections((0, 0, 4, 10, 0.9, 0))]  # IoU 40 / 100
    metrics = detection_metrics(predictions, targets, CLASSES, score_threshold=0.5)
    assert (metrics["precision"], metrics["recall"], metrics["f1"], metrics["map50"]) == (0.0, 0.0, 0.0, 0.0)
    looser = detection_metrics(predictions, targets, CLASSES, score_threshold=0.5, iou_threshold=0.35)
    assert (looser["precision"], looser["recall"]) == (1.0, 1.0)


def test_a_missed_object_lowers_recall_to_its_fraction() -> None:
    targets = _scene()
    predictions = _perfect(targets)
    predictions[0] = Detections(predictions[0].boxes[1:], predictions[0].scores[1:], predictions[0].labels[1:])
    metrics = detection_metrics(predictions, targets, CLASSES, score_threshold=0.5)
    assert metrics["precision"] == 1.0
    assert metrics["recall"] == 3 / 4
    assert metrics["f1"] == pytest.approx(2 * 0.75 / 1.75)
    assert metrics["ap50/bird"] == 1.0
    # Two of three drones found at precision 1: COCO's 101-point AP is 67 of 101 recall points.
    assert metrics["ap50/drone"] == pytest.approx(67 / 101)
    assert metrics["map50"] == pytest.approx((67 / 101 + 1.0) / 2)


def test_score_threshold_and_duplicates() -> None:
    targets = [_truth((0, 0, 10, 10, 0))]
    # The higher score takes the box; its duplicate is a false positive; a low-score hit is not counted.
    predictions = [_detections((0, 0, 10, 10, 0.8, 0), (0, 0, 10, 9, 0.7, 0), (50, 50, 60, 60, 0.2, 0))]
    metrics = detection_metrics(predictions, targets, CLASSES, score_threshold=0.5)
    assert (metrics["precision"], metrics["recall"]) == (0.5, 1.0)
    assert metrics["map50"] == 1.0  # mAP ranks all detections: the hit comes first


def test_wrong_class_is_a_false_positive_and_per_class_keys() -> None:
    targets = [_truth((0, 0, 10, 10, 0), (20, 20, 40, 40, 1))]
    predictions = [_detections((0, 0, 10, 10, 0.9, 0), (20, 20, 40, 40, 0.9, 2))]  # the bird called a plane
    metrics = detection_metrics(predictions, targets, CLASSES, score_threshold=0.5)
    assert metrics["ap50/drone"] == 1.0
    assert metrics["ap50/bird"] == 0.0
    assert "ap50/plane" not in metrics
    assert metrics["map50"] == 0.5
    assert (metrics["precision"], metrics["recall"]) == (0.5, 0.5)


def test_empty_predictions_and_empty_sets_give_zero() -> None:
    targets = _scene()
    empty = [Detections.empty() for _ in targets]
    metrics = detection_metrics(empty, targets, CLASSES, score_threshold=0.5)
    assert metrics == {"map50": 0.0, "map": 0.0, "ap50/drone": 0.0, "ap50/bird": 0.0} | dict.fromkeys(
        ["precision", "recall", "f1"], 0.0
    )
    negatives = [_truth(), _truth()]
    nothing = detection_metrics([Detections.empty()] * 2, negatives, CLASSES, score_threshold=0.5)
    assert nothing == dict.fromkeys(["map50", "map", "precision", "recall", "f1"], 0.0)
    assert detection_metrics([], [], CLASSES, score_threshold=0.5)["map"] == 0.0


def test_false_positives_on_negative_images_lower_precision() -> None:
    targets = _scene()
    predictions = _perfect(targets)
    predictions[2] = _detections((5, 5, 25, 25, 0.95, 0))
    metrics = detection_metrics(predictions, targets, CLASSES, score_threshold=0.5)
    assert (metrics["precision"], metrics["recall"]) == (4 / 5, 1.0)
    assert metrics["map50"] < 1.0  # the false positive outranks every hit


def test_operating_points_by_hand() -> None:
    targets = [_truth((0, 0, 10, 10, 0), (20, 0, 30, 10, 0)), _truth()]
    predictions = [
        _detections((0, 0, 10, 10, 0.9, 0), (50, 50, 60, 60, 0.3, 0), (20, 0, 30, 10, 0.2, 0)),
        Detections.empty(),
    ]
    points = operating_points(predictions, targets, CLASSES, {"recall": 0.15, "balanced": 0.25, "precision": 0.4})
    assert list(points) == ["recall", "balanced", "precision"]
    assert points["recall"] == pytest.approx(
        {"score_threshold": 0.15, "precision": 2 / 3, "recall": 1.0, "f1": 0.8, "detections_per_image": 1.5}
    )
    assert points["balanced"] == pytest.approx(
        {"score_threshold": 0.25, "precision": 0.5, "recall": 0.5, "f1": 0.5, "detections_per_image": 1.0}
    )
    assert points["precision"] == pytest.approx(
        {"score_threshold": 0.4, "precision": 1.0, "recall": 0.5, "f1": 2 / 3, "detections_per_image": 0.5}
    )
    # The same figures as detection_metrics at each threshold.
    balanced = detection_metrics(predictions, targets, CLASSES, score_threshold=0.25)
    assert (balanced["precision"], balanced["recall"], balanced["f1"]) == (0.5, 0.5, 0.5)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="2 prediction sets for 1 images"):
        detection_metrics([Detections.empty()] * 2, [_truth()], CLASSES, score_threshold=0.5)
    with pytest.raises(ValueError, match="outside the 3 classes"):
        detection_metrics([_detections((0, 0, 1, 1, 0.5, 3))], [_truth()], CLASSES, score_threshold=0.5)
    with pytest.raises(ValueError, match="2 scores for 1 boxes"):
        Detections(np.zeros((1, 4)), [0.1, 0.2], [0])
    with pytest.raises(ValueError, match="x2 >= x1"):
        GroundTruth(np.array([[10, 0, 5, 5]]), [0])
