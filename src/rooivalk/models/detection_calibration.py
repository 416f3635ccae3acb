"""Per-class temperature calibration of object-detector scores, with reliability diagrams.

A detector's score ranks boxes well but is no probability: at score 0.8 perhaps half the boxes are right, and
the share differs per class. Following Küppers et al. 2020 ("Multivariate Confidence Calibration for Object
Detection"), a detection's confidence is calibrated when it equals the precision of the detections at that
confidence; the detection expected calibration error (D-ECE) is the share-weighted gap between per-bin precision
and mean confidence. Each class c gets a temperature T_c > 0 and a bias b_c, s' = sigmoid(logit(s) / T_c + b_c),
fitted on validation detections by minimizing the binary cross-entropy against "matched a ground truth at IoU
0.5". The bias is there because a temperature alone only stretches scores about 0.5: a class whose precision
stays under one half at every score would need T -> inf and end with every score near 0.5 (measured: raw 0.8-0.99
at 50 % precision all became 0.50-0.51), which a threshold cannot use. With b = 0 it is temperature scaling. The
map is monotone within a class, so each class's ranking, hence per-class AP and mAP, is untouched; only score
thresholds gain a meaning ("keep the boxes with >= 70 % precision").
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from rooivalk import storage
from rooivalk.models.detection_metrics import Detections, GroundTruth, true_positives

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# Bounds on log T, as in rooivalk.export.temperature: where a class's true and false positives are separated at
# score 0.5 the loss keeps falling as T -> 0; clamping inside the objective makes it flat beyond the bounds.
_LOG_T_BOUND = math.log(100.0)
_BIAS_BOUND = 20.0  # sigmoid(+-20) is 1 - 2e-9: any bias beyond changes nothing a float32 score shows
# Scores are clipped to [_EPS, 1 - _EPS] before the logit: a saturated sigmoid gives exactly 0 or 1, whose logit
# is infinite. The D-ECE clips too, so a score of 1.0 never lands in torchmetrics' extra bin past the last edge.
_EPS = 1e-6


def _check_bins(bins: int) -> None:
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")


def _check_scores(scores: np.ndarray) -> np.ndarray:
    """float32 (D,) in [0, 1], or a ValueError naming the problem."""
    values = np.asarray(scores)
    if values.ndim != 1:
        raise ValueError(f"scores must be 1-D (detections,), got shape {values.shape}")
    if values.size and not np.issubdtype(values.dtype, np.floating):
        raise ValueError(f"scores must be floating point, got dtype {values.dtype}")
    if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
        raise ValueError("scores must be finite and in [0, 1] (detector confidences, not logits)")
    return values.astype(np.float32, copy=False)


def _check_rows(values: np.ndarray, rows: int, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (rows,):
        raise ValueError(f"{what} have shape {values.shape} but there are {rows} scores; expected ({rows},)")
    return values


def _check_labels(labels: np.ndarray, rows: int, classes: int | None = None) -> np.ndarray:
    """int64 (D,); with `classes`, every label in 0..classes-1."""
    values = _check_rows(labels, rows, "labels")
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {values.dtype}")
    if classes is not None and values.size and (values.min() < 0 or values.max() >= classes):
        bad = int(values.min()) if values.min() < 0 else int(values.max())
        raise ValueError(f"label {bad} outside the {classes} classes (0..{classes - 1})")
    return values.astype(np.int64, copy=False)


def _check_flags(flags: np.ndarray, rows: int) -> np.ndarray:
    values = _check_rows(flags, rows, "true_positive flags")
    if values.dtype != bool and not (np.issubdtype(values.dtype, np.integer) and np.isin(values, (0, 1)).all()):
        raise ValueError(f"true_positive flags must be bool (or 0/1 integers), got dtype {values.dtype}")
    return values.astype(bool, copy=False)


def _check_temperatures(temperatures: Sequence[float]) -> np.ndarray:
    values = np.asarray(temperatures, dtype=np.float64).reshape(-1)  # (K,)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise ValueError(f"temperatures must be finite and > 0, got {values[index]!r} for class {index}")
    return values


def _logit(scores: np.ndarray) -> np.ndarray:
    clipped = np.clip(scores.astype(np.float64), _EPS, 1 - _EPS)
    logits: np.ndarray = np.log(clipped) - np.log1p(-clipped)  # float64 (D,), |z| <= 13.8
    return logits


@dataclass(frozen=True)
class CalibrationSamples:
    """Every detection of a split, flattened over its images in order."""

    scores: np.ndarray  # float32 (D,)
    labels: np.ndarray  # int64 (D,): class indices
    true_positive: np.ndarray  # bool (D,): matched a same-class ground truth
    images: int

    def __post_init__(self) -> None:
        scores = _check_scores(self.scores)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", _check_labels(self.labels, len(scores)))
        object.__setattr__(self, "true_positive", _check_flags(self.true_positive, len(scores)))


def calibration_samples(
    predictions: Sequence[Detections], truths: Sequence[GroundTruth], iou_threshold: float = 0.5
) -> CalibrationSamples:
    """All detections of a split, each flagged by the greedy matching of `detection_metrics` at iou_threshold."""
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    flags = true_positives(predictions, truths, iou_threshold)  # raises on a length mismatch
    return CalibrationSamples(
        scores=np.concatenate([p.scores for p in predictions] or [np.zeros(0, np.float32)]),
        labels=np.concatenate([p.labels for p in predictions] or [np.zeros(0, np.int64)]),
        true_positive=np.concatenate(flags or [np.zeros(0, bool)]),
        images=len(truths),
    )


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class ClassTemperatures:
    classes: tuple[str, ...]
    temperatures: tuple[float, ...]  # one per class, > 0; 1.0 where not fitted
    biases: tuple[float, ...]  # one per class; 0.0 where not fitted
    detections: tuple[int, ...]  # validation detections per class
    fitted: tuple[bool, ...]  # False: too few detections, or all true / all false positives (see notes)
    notes: tuple[str, ...]  # per class: '' or why the temperature was left at 1
    ece_before: float  # D-ECE over all classes' detections, raw scores
    ece_after: float  # the same, calibrated
    class_ece_before: tuple[float, ...]  # per class; NaN where a class has no detections
    class_ece_after: tuple[float, ...]
    bins: int

    def __post_init__(self) -> None:
        _check_bins(self.bins)
        per_class = (self.temperatures, self.biases, self.detections, self.fitted, self.notes, self.class_ece_before)
        if any(len(values) != len(self.classes) for values in (*per_class, self.class_ece_after)):
            raise ValueError(f"every per-class field needs {len(self.classes)} entries, one per class")
        _check_biases(self.biases, len(_check_temperatures(self.temperatures)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: bins and overall D-ECE, then one entry per class name; NaN becomes None."""
        return {
            "bins": self.bins,
            "ece_before": _json_float(self.ece_before),
            "ece_after": _json_float(self.ece_after),
            "classes": {name: self._class_dict(c) for c, name in enumerate(self.classes)},
        }

    def _class_dict(self, c: int) -> dict[str, Any]:
        return {
            "temperature": self.temperatures[c],
            "bias": self.biases[c],
            "detections": self.detections[c],
            "fitted": self.fitted[c],
            "note": self.notes[c],
            "ece_before": _json_float(self.class_ece_before[c]),
            "ece_after": _json_float(self.class_ece_after[c]),
        }


def _bce(logits: torch.Tensor, positives: torch.Tensor, temperature: float, bias: float) -> float:
    return float(F.binary_cross_entropy_with_logits(logits / temperature + bias, positives))


def _fit_log_temperature_and_bias(logits: torch.Tensor, positives: torch.Tensor) -> tuple[float, float]:
    """argmin over (log T, b) of the BCE, by LBFGS with a strong-Wolfe line search, from T = 1, b = 0."""
    params = torch.zeros(2, dtype=logits.dtype, requires_grad=True)  # (log T, b)
    optimizer = torch.optim.LBFGS(
        [params], lr=1.0, max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        t = torch.exp(params[0].clamp(-_LOG_T_BOUND, _LOG_T_BOUND))
        loss = F.binary_cross_entropy_with_logits(logits / t + params[1].clamp(-_BIAS_BOUND, _BIAS_BOUND), positives)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]  # torch leaves it unannotated
    log_t, bias = params.detach()
    return float(log_t.clamp(-_LOG_T_BOUND, _LOG_T_BOUND)), float(bias.clamp(-_BIAS_BOUND, _BIAS_BOUND))


def _fit_class(logits: np.ndarray, positives: np.ndarray, min_detections: int) -> tuple[float, float, bool, str]:
    """(T, b, fitted, note) for one class's logits (n,) float64 and flags (n,) bool."""
    count, hits = len(logits), int(positives.sum())
    if count < min_detections:
        return 1.0, 0.0, False, f"{count} detections, fewer than min_detections={min_detections}"
    if hits in (0, count):
        # Precision 0 or 1 at every score: nothing finite expresses it, the loss only flattens towards 0 or 1.
        kind = "true" if hits else "false"
        return 1.0, 0.0, False, f"all {count} detections are {kind} positives: no finite calibration fits"
    # float64: the objective is flat near its minimum. Callers may run under no_grad or inference_mode, and
    # tensors made inside inference mode cannot be saved for backward, so they are created inside the block.
    with torch.inference_mode(False), torch.enable_grad():
        z = torch.from_numpy(logits)
        y = torch.from_numpy(positives.astype(np.float64))
        log_t, bias = _fit_log_temperature_and_bias(z, y)
    temperature = math.exp(log_t)
    before, after = _bce(z, y, 1.0, 0.0), _bce(z, y, temperature, bias)
    if not math.isfinite(after) or after > before:
        return 1.0, 0.0, True, "no calibration found with a lower loss than T=1, b=0"  # LBFGS starts there
    return temperature, bias, True, ""


def fit_class_temperatures(
    samples: CalibrationSamples, classes: Sequence[str], min_detections: int = 20, bins: int = 10
) -> ClassTemperatures:
    """One temperature per class from validation samples; D-ECE overall and per class, before and after."""
    _check_bins(bins)
    names = tuple(classes)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"classes must be non-empty and unique, got {list(names)}")
    if isinstance(min_detections, bool) or not isinstance(min_detections, int) or min_detections < 1:
        raise ValueError(f"min_detections must be a positive integer, got {min_detections!r}")
    labels = _check_labels(samples.labels, len(samples.scores), len(names))
    logits = _logit(samples.scores)
    fits = [
        _fit_class(logits[labels == c], samples.true_positive[labels == c], min_detections) for c in range(len(names))
    ]
    temperatures = tuple(t for t, _, _, _ in fits)
    biases = tuple(b for _, b, _, _ in fits)
    calibrated = calibrate_scores(samples.scores, labels, temperatures, biases)

    def class_ece(scores: np.ndarray, c: int) -> float:
        mask = labels == c
        return detection_calibration_error(scores[mask], samples.true_positive[mask], bins) if mask.any() else math.nan

    return ClassTemperatures(
        classes=names,
        temperatures=temperatures,
        biases=biases,
        detections=tuple(int((labels == c).sum()) for c in range(len(names))),
        fitted=tuple(fitted for _, _, fitted, _ in fits),
        notes=tuple(note for _, _, _, note in fits),
        ece_before=detection_calibration_error(samples.scores, samples.true_positive, bins),
        ece_after=detection_calibration_error(calibrated, samples.true_positive, bins),
        class_ece_before=tuple(class_ece(samples.scores, c) for c in range(len(names))),
        class_ece_after=tuple(class_ece(calibrated, c) for c in range(len(names))),
        bins=int(bins),
    )


def calibrate_scores(
    scores: np.ndarray, labels: np.ndarray, temperatures: Sequence[float], biases: Sequence[float] | None = None
) -> np.ndarray:
    """sigmoid(logit(s) / T[label] + b[label]) (b: 0 when None) as float32 of the scores' shape. Non-decreasing
    within a class; float32 rounding may merge scores that differ by less than its resolution, and clipping
    merges those beyond 1e-6 of 0 or 1."""
    values = np.asarray(scores)
    t = _check_temperatures(temperatures)
    b = _check_biases(biases, len(t))
    flat = _check_scores(values.reshape(-1))
    label_array = np.asarray(labels)
    if label_array.shape != values.shape:
        raise ValueError(f"labels have shape {label_array.shape} but scores have shape {values.shape}")
    index = _check_labels(label_array.reshape(-1), len(flat), len(t))
    # torch's sigmoid is stable for the large |logit / T| that small temperatures give; numpy's exp overflows.
    calibrated = torch.sigmoid(torch.from_numpy(_logit(flat) / t[index] + b[index])).numpy()  # float64 (D,)
    return calibrated.astype(np.float32).reshape(values.shape)


def calibrate_detections(
    detections: Detections, temperatures: Sequence[float], biases: Sequence[float] | None = None
) -> Detections:
    """The same boxes and labels with calibrated scores."""
    scores = calibrate_scores(detections.scores, detections.labels, temperatures, biases)
    return Detections(detections.boxes, scores, detections.labels)


def raw_score_threshold(
    threshold: float, temperatures: Sequence[float], biases: Sequence[float] | None = None
) -> float:
    """The lowest raw score whose calibrated score reaches `threshold` in any class: min over c of
    sigmoid(T_c (logit(threshold) - b_c)), the inverse of the calibration. A post-process whose candidate
    threshold is at most this drops no box that would pass `threshold` once calibrated."""
    t = _check_temperatures(temperatures)
    b = _check_biases(biases, len(t))
    level = _logit(np.asarray([min(max(float(threshold), _EPS), 1 - _EPS)], dtype=np.float64))[0]
    return float(torch.sigmoid(torch.from_numpy(t * (level - b))).min())


def _check_biases(biases: Sequence[float] | None, classes: int) -> np.ndarray:
    if biases is None:
        return np.zeros(classes, dtype=np.float64)
    values = np.asarray(biases, dtype=np.float64).reshape(-1)
    if values.shape != (classes,) or not np.isfinite(values).all():
        raise ValueError(f"biases must be {classes} finite numbers, one per temperature, got {list(biases)}")
    return values


def detection_calibration_error(scores: np.ndarray, true_positive: np.ndarray, bins: int = 10) -> float:
    """D-ECE: sum over `bins` equal-width confidence bins of |precision - mean confidence| * share of detections;
    0.0 for no detections."""
    _check_bins(bins)
    values = _check_scores(scores)
    flags = _check_flags(true_positive, len(values))
    if not len(values):
        return 0.0
    # Imported here: torchmetrics pulls in torchvision and costs seconds at import.
    from torchmetrics.functional.classification import binary_calibration_error

    preds = torch.from_numpy(np.clip(values, _EPS, 1 - _EPS).astype(np.float32))
    return float(binary_calibration_error(preds, torch.from_numpy(flags.astype(np.int64)), n_bins=int(bins), norm="l1"))


def _bin_precision(scores: np.ndarray, positives: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, mean confidence, count), each float64 (bins,) and 0 where a bin is empty, with torchmetrics'
    own edges and bucketing (torch.linspace, bucketize right=True), so the bars agree with the D-ECE."""
    confidence = torch.from_numpy(np.clip(scores, _EPS, 1 - _EPS).astype(np.float32))
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float32)
    index = (torch.bucketize(confidence, edges, right=True) - 1).numpy()  # (D,) in 0..bins-1 after the clip
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    safe = np.maximum(counts, 1)
    precision = np.bincount(index, weights=positives.astype(np.float64), minlength=bins) / safe
    mean_conf = np.bincount(index, weights=confidence.numpy().astype(np.float64), minlength=bins) / safe
    return precision, mean_conf, counts


def _draw_panel(
    axes: Axes, name: str, raw: np.ndarray, calibrated: np.ndarray, positives: np.ndarray, bins: int
) -> None:
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="precision", title=f"{name} (n={len(raw)})")
    if not len(raw):
        axes.text(0.5, 0.5, "no detections", ha="center", va="center", color="grey")
        return
    centres = (np.arange(bins) + 0.5) / bins
    width = 0.45 / bins  # two bars side by side in each bin
    for offset, scores, colour, label in ((-0.5, raw, "tab:red", "raw"), (0.5, calibrated, "tab:blue", "calibrated")):
        precision, _, counts = _bin_precision(scores, positives, bins)
        shown = counts > 0  # an empty bin draws nothing rather than a bar at 0
        ece = detection_calibration_error(scores, positives, bins)
        x = centres[shown] + offset * width
        axes.bar(x, precision[shown], width, color=colour, alpha=0.75, label=f"{label}: D-ECE {ece:.3f}")
    axes.legend(loc="upper left", fontsize="small")


def detection_reliability_diagram(
    samples: CalibrationSamples, fit: ClassTemperatures, path: str | Path, title: str
) -> Path:
    """PNG: per-bin precision against confidence, raw (red) and calibrated by `fit` (blue), one panel per class
    and one for all classes, in fit.bins bins. The samples may be another split than the fit's. Written
    atomically; returns the path."""
    labels = _check_labels(samples.labels, len(samples.scores), len(fit.classes))
    calibrated = calibrate_scores(samples.scores, labels, fit.temperatures, fit.biases)
    panels = [
        (
            f"{name}, T={fit.temperatures[c]:.3g} b={fit.biases[c]:+.2f}{'' if fit.fitted[c] else ' (not fitted)'}",
            labels == c,
        )
        for c, name in enumerate(fit.classes)
    ]
    panels.append(("all classes", np.ones(len(labels), dtype=bool)))
    # Figure + FigureCanvasAgg, not pyplot: no global backend choice or figure registry is touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(3.8 * columns, 3.6 * rows + 0.5))
    FigureCanvasAgg(fig)
    grid = fig.subplots(rows, columns, squeeze=False)  # (rows, columns) of Axes
    for axes, (name, mask) in zip(grid.flat, panels, strict=False):
        _draw_panel(axes, name, samples.scores[mask], calibrated[mask], samples.true_positive[mask], fit.bins)
    for axes in grid.flat[len(panels) :]:
        axes.set_visible(False)  # the grid's unused tail
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    target = Path(path)
    storage.write_bytes(target, buffer.getvalue())  # temp file + rename: no partial PNG is ever visible
    return target
