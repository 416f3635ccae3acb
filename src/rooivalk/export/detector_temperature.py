"""Per-class temperatures of a detector's shipped variant (`export.temperature_scaling: true`).

A detector's score is no probability: at 0.6 one class may be right 90% of the time and another 40%.
One temperature and bias per class, fitted on a seeded subset of the validation images
(`export.temperature_images`), maps each class's scores so that a score reads as the precision of
detections scoring it (rooivalk.models.detection_calibration: matched at IoU 0.5, binary cross-entropy).
The bundle applies them after NMS (`class_temperatures`, `class_biases` in its post-process settings),
so the candidates, NMS and per-class rankings, and with them mAP, do not move; what moves is which boxes
pass a threshold: the operating threshold now means a precision. The shipped variant's test detections
measure it: D-ECE (detection expected calibration error) before and after, precision / recall / F1 at
the operating threshold with calibrated scores (what `Predictor.detect` keeps: model_calibrated_*, the
figures to gate the shipped detector on; the evaluate step's test_precision etc. are of raw scores), and
a reliability diagram per class of the test split, shipped in the bundle as reliability.png.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rooivalk.models.detection_calibration import (
    calibrate_detections,
    calibration_samples,
    detection_calibration_error,
    detection_reliability_diagram,
    fit_class_temperatures,
)
from rooivalk.models.detection_metrics import Detections, GroundTruth, operating_points

RELIABILITY_FILE = "reliability.png"  # the bundle's, as a classifier's (rooivalk.export.bundle)
MIN_DETECTIONS = 20  # per class: fewer validation detections leave its temperature at 1


@dataclass
class DetectorCalibration:
    """What calibrating a shipped detector gave: its temperatures, figures, report and bundle files."""

    temperatures: list[float] | None = None  # one per class; None: not calibrated
    biases: list[float] | None = None  # one per class, with the temperatures
    metrics: dict[str, float] = field(default_factory=dict)  # added to the shipped model's measured figures
    report: dict[str, Any] | None = None
    files: dict[str, Path] = field(default_factory=dict)


def calibrate_detector(
    classes: Sequence[str],
    operating_threshold: float,
    validation: tuple[list[Detections], list[GroundTruth]],
    test: tuple[list[Detections], list[GroundTruth]],
    folder: Path,
    title: str,
    say: Callable[[str], None],
) -> DetectorCalibration:
    """Fit per-class temperatures on the shipped variant's `validation` detections (and their truths) and
    measure them on its `test` ones; the reliability diagram is written to `folder`."""
    fit = fit_class_temperatures(calibration_samples(*validation), classes, MIN_DETECTIONS)
    if not any(fit.fitted):
        say("detector scores left uncalibrated: no class has enough validation detections with hits and misses")
        return DetectorCalibration(report={"validation": fit.to_dict(), "fitted": False})
    found, truths = test
    samples = calibration_samples(found, truths)
    calibrated = [calibrate_detections(detections, fit.temperatures, fit.biases) for detections in found]
    after = calibration_samples(calibrated, truths)
    point = operating_points(calibrated, truths, list(classes), {"operating": operating_threshold})["operating"]
    metrics = {
        "ece_before": detection_calibration_error(samples.scores, samples.true_positive, fit.bins),
        "ece_after": detection_calibration_error(after.scores, after.true_positive, fit.bins),
        **{f"calibrated_{name}": float(point[name]) for name in ("precision", "recall", "f1")},
        **{f"temperature_{name}": t for name, t in zip(classes, fit.temperatures, strict=True)},
        **{f"bias_{name}": b for name, b in zip(classes, fit.biases, strict=True)},
    }
    png = detection_reliability_diagram(samples, fit, folder / RELIABILITY_FILE, f"{title}: test split")
    fitted = [
        f"{name} T {t:.3g} b {b:+.2f}"
        for name, t, b, ok in zip(classes, fit.temperatures, fit.biases, fit.fitted, strict=True)
        if ok
    ]
    say(
        f"per-class temperatures ({', '.join(fitted)}): test D-ECE {metrics['ece_before']:.4f} -> "
        f"{metrics['ece_after']:.4f}"
    )
    report = {
        "fitted": True,
        "validation": fit.to_dict(),
        "test": {key: value for key, value in metrics.items() if not key.startswith(("temperature_", "bias_"))},
    }
    return DetectorCalibration(list(fit.temperatures), list(fit.biases), metrics, report, {RELIABILITY_FILE: png})
