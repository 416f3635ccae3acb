"""Per-class temperature calibration of detector scores on synthetic detections whose true precision is known
by construction, and on small scenes with boxes for matching and mAP."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from rooivalk.models.detection_calibration import (
    CalibrationSamples,
    ClassTemperatures,
    _bin_precision,
    calibrate_detections,
    calibrate_scores,
    calibration_samples,
    detection_calibration_error,
    detection_reliability_diagram,
    fit_class_temperatures,
    raw_score_threshold,
)
from rooivalk.models.detection_metrics import Detections, GroundTruth, detection_metrics, true_positives

CLASSES = ["drone", "bird", "plane"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def _draw(count: int, scale: float, label: int, rng: np.random.Generator) -> CalibrationSamples:
    """True-positive odds sigmoid(z) but score sigmoid(scale * z): T = scale restores calibration."""
    z = rng.normal(0.0, 1.5, count)
    return CalibrationSamples(
        scores=_sigmoid(scale * z).astype(np.float32),
        labels=np.full(count, label, dtype=np.int64),
        true_positive=rng.uniform(size=count) < _sigmoid(z),
        images=count,
    )


def _join(*parts: CalibrationSamples) -> CalibrationSamples:
    return CalibrationSamples(
        scores=np.concatenate([p.scores for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        true_positive=np.concatenate([p.true_positive for p in parts]),
        images=sum(p.images for p in parts),
    )


def _bce(scores: np.ndarray, positives: np.ndarray, temperature: float) -> float:
    """Reference loss in numpy, independent of the module's torch code."""
    p = np.clip(scores.astype(np.float64), 1e-6, 1 - 1e-6)
    q = _sigmoid((np.log(p) - np.log1p(-p)) / temperature)
    return float(-np.mean(np.where(positives, np.log(q), np.log1p(-q))))


@pytest.fixture(scope="module")
def mixed() -> CalibrationSamples:
    """drone overconfident (x2.5), bird underconfident (x0.5), plane calibrated; 4000 detections each."""
    rng = np.random.default_rng(0)
    return _join(_draw(4000, 2.5, 0, rng), _draw(4000, 0.5, 1, rng), _draw(4000, 1.0, 2, rng))


def test_over_and_underconfident_classes_get_their_own_temperature(mixed: CalibrationSamples) -> None:
    fit = fit_class_temperatures(mixed, CLASSES)
    drone, bird, plane = fit.temperatures
    assert drone == pytest.approx(2.5, rel=0.1)
    assert bird == pytest.approx(0.5, rel=0.1)
    assert plane == pytest.approx(1.0, rel=0.1)
    assert fit.fitted == (True, True, True)
    assert fit.notes == ("", "", "")
    assert fit.detections == (4000, 4000, 4000)
    assert fit.ece_after < fit.ece_before / 3
    for before, after in zip(fit.class_ece_before[:2], fit.class_ece_after[:2], strict=True):
        assert after < before / 3
    for c, t in enumerate(fit.temperatures):  # a minimum of the loss, below T=1 and both neighbours
        mask = mixed.labels == c
        loss = _bce(mixed.scores[mask], mixed.true_positive[mask], t)
        assert loss <= _bce(mixed.scores[mask], mixed.true_positive[mask], 1.0) + 1e-12
        assert loss <= _bce(mixed.scores[mask], mixed.true_positive[mask], t * 1.05)
        assert loss <= _bce(mixed.scores[mask], mixed.true_positive[mask], t / 1.05)


def test_high_scores_with_half_true_positives_are_softened() -> None:
    rng = np.random.default_rng(1)
    count = 500
    samples = CalibrationSamples(
        scores=rng.uniform(0.8, 0.99, count).astype(np.float32),
        labels=np.zeros(count, dtype=np.int64),
        true_positive=rng.uniform(size=count) < 0.5,
        images=50,
    )
    fit = fit_class_temperatures(samples, ["drone"])
    assert fit.temperatures[0] > 5
    assert fit.ece_before > 0.3
    assert fit.ece_after < 0.1


def test_fit_works_under_inference_mode(mixed: CalibrationSamples) -> None:
    with torch.inference_mode():
        fit = fit_class_temperatures(mixed, CLASSES)
    assert fit.temperatures[0] == pytest.approx(2.5, rel=0.1)


def test_classes_without_a_fittable_split_stay_at_one_with_a_note() -> None:
    rng = np.random.default_rng(2)
    few = _draw(5, 2.0, 0, rng)
    all_tp = CalibrationSamples(rng.uniform(0.3, 0.9, 30).astype(np.float32), np.full(30, 1), np.ones(30, bool), 3)
    all_fp = CalibrationSamples(rng.uniform(0.3, 0.9, 30).astype(np.float32), np.full(30, 2), np.zeros(30, bool), 3)
    fit = fit_class_temperatures(_join(few, all_tp, all_fp), [*CLASSES, "heli"], min_detections=20)
    assert fit.temperatures == (1.0, 1.0, 1.0, 1.0)
    assert fit.fitted == (False, False, False, False)
    assert fit.detections == (5, 30, 30, 0)
    assert "5 detections" in fit.notes[0]
    assert "min_detections=20" in fit.notes[0]
    assert "true positives" in fit.notes[1]
    assert "false positives" in fit.notes[2]
    assert "0 detections" in fit.notes[3]
    assert math.isnan(fit.class_ece_before[3])
    assert math.isnan(fit.class_ece_after[3])
    assert fit.ece_after == pytest.approx(fit.ece_before)  # every T is 1: nothing moved
    record = json.loads(json.dumps(fit.to_dict(), allow_nan=False))  # NaN became null, so strict JSON holds
    assert record["classes"]["heli"] == {
        "temperature": 1.0,
        "bias": 0.0,
        "detections": 0,
        "fitted": False,
        "note": fit.notes[3],
        "ece_before": None,
        "ece_after": None,
    }
    assert record["bins"] == 10
    assert list(record["classes"]) == [*CLASSES, "heli"]


def test_calibrate_scores_applies_each_class_temperature() -> None:
    scores = np.array([0.9, 0.9, 0.2, 1.0], dtype=np.float32)
    labels = np.array([0, 1, 1, 0])
    out = calibrate_scores(scores, labels, [2.0, 0.5])
    logit = math.log(0.9 / 0.1)
    expected = [1 / (1 + math.exp(-logit / 2)), 1 / (1 + math.exp(-logit * 2)), 1 / (1 + math.exp(math.log(4) * 2))]
    assert out.dtype == np.float32
    assert out.shape == (4,)
    np.testing.assert_allclose(out[:3], expected, rtol=1e-6)
    assert 0.99 < out[3] < 1.0  # a saturated 1.0 is clipped to 1 - 1e-6 before the logit, not infinite
    np.testing.assert_allclose(calibrate_scores(scores[:3], labels[:3], [1.0, 1.0]), scores[:3], rtol=1e-6)


def _scene(rng: np.random.Generator, images: int = 8) -> tuple[list[Detections], list[GroundTruth]]:
    """Each image: 1-4 objects of random class, each found by a jittered box (sometimes with the wrong class),
    plus 0-3 background false positives; distinct random scores."""
    predictions, truths = [], []
    for _ in range(images):
        count = int(rng.integers(1, 5))
        xy = rng.uniform(0, 400, (count, 2))
        gt = np.concatenate([xy, xy + rng.uniform(20, 80, (count, 2))], axis=1)
        gt_labels = rng.integers(0, 3, count)
        found = gt + rng.normal(0, 4, gt.shape)
        found[:, 2:] = np.maximum(found[:, 2:], found[:, :2] + 1)
        labels = np.where(rng.uniform(size=count) < 0.2, (gt_labels + 1) % 3, gt_labels)
        extra = int(rng.integers(0, 4))
        xy = rng.uniform(0, 400, (extra, 2))
        background = np.concatenate([xy, xy + 30], axis=1)
        boxes = np.concatenate([found, background])
        all_labels = np.concatenate([labels, rng.integers(0, 3, extra)])
        predictions.append(Detections(boxes, rng.uniform(0.05, 0.95, len(boxes)), all_labels))
        truths.append(GroundTruth(gt, gt_labels))
    return predictions, truths


def test_calibration_keeps_each_class_order_and_so_the_map() -> None:
    predictions, truths = _scene(np.random.default_rng(3))
    temperatures = [2.0, 0.5, 1.3]
    calibrated = [calibrate_detections(d, temperatures) for d in predictions]
    before = detection_metrics(predictions, truths, CLASSES, score_threshold=0.5)
    after = detection_metrics(calibrated, truths, CLASSES, score_threshold=0.5)
    assert before["map50"] > 0
    for key in before:
        if key.startswith(("map", "ap50/")):
            assert after[key] == before[key], key
    raw = np.concatenate([d.scores for d in predictions])
    new = np.concatenate([d.scores for d in calibrated])
    labels = np.concatenate([d.labels for d in predictions])
    for c in range(3):
        mask = labels == c
        assert (np.argsort(raw[mask]) == np.argsort(new[mask])).all()
    assert not np.allclose(raw, new)  # the scores did move
    for old, cal in zip(predictions, calibrated, strict=True):
        np.testing.assert_array_equal(old.boxes, cal.boxes)
        np.testing.assert_array_equal(old.labels, cal.labels)


def test_true_positives_greedy_by_score_and_class() -> None:
    truth = GroundTruth(np.array([[0, 0, 10, 10]]), np.array([0]))
    detections = Detections(
        np.array([[1, 1, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]]),
        np.array([0.6, 0.9, 0.95]),
        np.array([0, 0, 1]),  # the highest score has the wrong class
    )
    negative = Detections(np.array([[0, 0, 10, 10]]), np.array([0.8]), np.array([0]))
    nothing = GroundTruth(np.zeros((0, 4)), np.zeros(0, dtype=np.int64))
    flags = true_positives([detections, negative], [truth, nothing])
    assert [f.tolist() for f in flags] == [[False, True, False], [False]]
    samples = calibration_samples([detections, negative], [truth, nothing])
    assert samples.true_positive.tolist() == [False, True, False, False]
    assert samples.labels.tolist() == [0, 0, 1, 0]
    np.testing.assert_allclose(samples.scores, [0.6, 0.9, 0.95, 0.8])
    assert samples.images == 2
    empty = calibration_samples([], [])
    assert (len(empty.scores), empty.images) == (0, 0)


def test_ece_by_hand_and_on_calibrated_data() -> None:
    assert detection_calibration_error(np.full(4, 0.95), np.array([1, 1, 0, 0], bool)) == pytest.approx(0.45)
    # bin [0.1, 0.2): precision 0 at 0.15; bin [0.8, 0.9): precision 0.5 at 0.85; half the detections each
    scores, flags = np.array([0.15, 0.15, 0.85, 0.85]), np.array([False, False, True, False])
    assert detection_calibration_error(scores, flags) == pytest.approx(0.15 * 0.5 + 0.35 * 0.5)
    assert detection_calibration_error(np.zeros(0), np.zeros(0, bool)) == 0.0
    rng = np.random.default_rng(4)
    scores = rng.uniform(0, 1, 20_000)
    assert detection_calibration_error(scores, rng.uniform(size=20_000) < scores) < 0.02


@pytest.mark.parametrize("bins", [1, 7, 10])
def test_diagram_bins_reproduce_the_ece(bins: int) -> None:
    rng = np.random.default_rng(bins)
    # values on the bin edges, 0 and 1 included, where an off-by-one in the bucketing would show
    scores = np.concatenate([rng.uniform(0, 1, 300), np.arange(bins + 1) / bins]).astype(np.float32)
    flags = rng.uniform(size=len(scores)) < 0.4
    precision, confidence, counts = _bin_precision(scores, flags, bins)
    assert counts.sum() == len(scores)
    gap = float((np.abs(precision - confidence) * counts / counts.sum()).sum())
    assert gap == pytest.approx(detection_calibration_error(scores, flags, bins), abs=1e-6)


def test_reliability_diagram_writes_a_png(mixed: CalibrationSamples, tmp_path: Path) -> None:
    classes = ["drone", "bird", "heli"]
    keep = mixed.labels < 2  # heli: no detections, an empty panel
    samples = CalibrationSamples(mixed.scores[keep], mixed.labels[keep], mixed.true_positive[keep], 100)
    fit = fit_class_temperatures(samples, classes)
    path = detection_reliability_diagram(samples, fit, tmp_path / "plots" / "reliability.png", "val split")
    assert path == tmp_path / "plots" / "reliability.png"
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000
    width, height = Image.open(path).size
    assert width > 2 * height  # four panels in one row


def _ok_fit(**changes: Any) -> ClassTemperatures:
    fields: dict[str, Any] = {
        "classes": ("drone", "bird"),
        "temperatures": (1.0, 2.0),
        "biases": (0.0, 0.5),
        "detections": (3, 4),
        "fitted": (True, True),
        "notes": ("", ""),
        "ece_before": 0.1,
        "ece_after": 0.05,
        "class_ece_before": (0.1, 0.1),
        "class_ece_after": (0.05, 0.05),
        "bins": 10,
    }
    fields.update(changes)
    return ClassTemperatures(**fields)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: calibrate_scores(np.array([0.5, 0.6]), np.array([0]), [1.0]), "shape"),
        (lambda: calibrate_scores(np.array([0.5]), np.array([2]), [1.0, 1.0]), "label 2 outside the 2 classes"),
        (lambda: calibrate_scores(np.array([0.5]), np.array([0]), [0.0]), "finite and > 0"),
        (lambda: calibrate_scores(np.array([0.5]), np.array([0]), [float("nan")]), "finite and > 0"),
        (lambda: calibrate_scores(np.array([1.5]), np.array([0]), [1.0]), "in [0, 1]"),
        (lambda: detection_calibration_error(np.array([0.5]), np.array([True]), bins=0), "bins must be"),
        (lambda: detection_calibration_error(np.array([0.5, 0.2]), np.array([True]), 10), "shape"),
        (lambda: detection_calibration_error(np.array([0.5]), np.array([2]), 10), "true_positive"),
        (lambda: _ok_fit(temperatures=(1.0,)), "one per class"),
        (lambda: _ok_fit(temperatures=(1.0, -2.0)), "finite and > 0"),
        (lambda: _ok_fit(biases=(0.0, float("inf"))), "biases must be 2 finite numbers"),
        (lambda: _ok_fit(bins=0), "bins must be"),
        (lambda: calibration_samples([Detections.empty()], []), "1 prediction sets for 0 images"),
        (lambda: calibration_samples([], [], iou_threshold=0.0), "iou_threshold"),
    ],
)
def test_bad_inputs_raise_naming_the_problem(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call()


def test_fit_refuses_labels_outside_the_classes_and_duplicate_names() -> None:
    samples = _draw(30, 1.0, 2, np.random.default_rng(5))
    with pytest.raises(ValueError, match="label 2 outside the 2 classes"):
        fit_class_temperatures(samples, ["drone", "bird"])
    with pytest.raises(ValueError, match="unique"):
        fit_class_temperatures(samples, ["drone", "drone", "bird"])
    with pytest.raises(ValueError, match="min_detections"):
        fit_class_temperatures(samples, CLASSES, min_detections=0)
    fit = fit_class_temperatures(samples, CLASSES)
    with pytest.raises(ValueError, match="outside the 2 classes"):
        detection_reliability_diagram(samples, _ok_fit(), "unused.png", "x")
    assert fit.detections == (0, 0, 30)


def test_a_class_below_half_precision_at_every_score_gets_a_bias_not_a_flat_half() -> None:
    """Precision sigmoid(logit(raw) / 2 - 1.6): 0.07 at raw 0.05, 0.47 at raw 0.95, under one half at every
    score. A temperature alone would squash every score towards 0.5; with the bias the fit recovers the
    truth and the calibrated scores follow the precision."""
    rng = np.random.default_rng(11)
    raw = rng.uniform(0.05, 0.95, 4000)
    precision = _sigmoid(np.log(raw / (1 - raw)) / 2.0 - 1.6)
    samples = CalibrationSamples(raw.astype(np.float32), np.zeros(4000, np.int64), rng.random(4000) < precision, 400)
    fit = fit_class_temperatures(samples, ["drone"])
    assert fit.fitted == (True,)
    assert fit.temperatures[0] == pytest.approx(2.0, rel=0.2)
    assert fit.biases[0] == pytest.approx(-1.6, abs=0.2)
    calibrated = calibrate_scores(samples.scores, samples.labels, fit.temperatures, fit.biases)
    assert calibrated.max() < 0.55  # never claims much better than the 0.47 it achieves
    assert calibrated.max() - calibrated.min() > 0.3  # and still ranks
    assert fit.ece_after < 0.03 < fit.ece_before


def test_raw_score_threshold_inverts_the_calibration() -> None:
    temperatures, biases = [2.0, 0.5, 1.0], [-1.0, 0.3, 0.0]
    keep = 0.3
    raw = raw_score_threshold(keep, temperatures, biases)
    # Each class's own inverse calibrates back to `keep`; the threshold is the lowest of them.
    inverse = [float(_sigmoid(t * (np.log(keep / (1 - keep)) - b))) for t, b in zip(temperatures, biases, strict=True)]
    back = calibrate_scores(np.array(inverse), np.arange(3), temperatures, biases)
    np.testing.assert_allclose(back, keep, rtol=1e-5)
    assert raw == pytest.approx(min(inverse))
    assert raw_score_threshold(keep, [1.0]) == pytest.approx(keep)  # T = 1, b = 0: the identity
