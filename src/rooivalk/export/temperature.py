"""Confidence calibration by temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks").

One scalar T > 0 divides the logits before softmax. It is fitted on the validation split by minimizing the
negative log-likelihood, so the top-1 prediction (argmax) never changes and accuracy is untouched; only the
confidences move. T > 1 softens an overconfident model, T < 1 sharpens an underconfident one.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rooivalk import storage

# Bounds on log T. Where the validation split is separable with margin, NLL keeps falling as T -> 0 and an
# unbounded optimizer walks into overflow; clamping inside the objective makes it flat beyond the bounds, so
# LBFGS stops at the edge instead. exp(+-ln 100) covers any useful calibration by far.
_LOG_T_BOUND = math.log(100.0)
# Row sums of probabilities may be off by float rounding (and fp16 models' outputs by more); a larger gap
# means logits were passed where probabilities belong.
_ROW_SUM_TOLERANCE = 1e-2


@dataclass(frozen=True)
class TemperatureFit:
    temperature: float  # > 0; logits are divided by it before softmax
    ece_before: float  # expected calibration error (top-1, equal-width bins) at T=1
    ece_after: float  # at the fitted T
    nll_before: float  # mean negative log-likelihood in nats per sample
    nll_after: float
    samples: int
    bins: int


def _check_bins(bins: int) -> None:
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")


def _check_labels(labels: np.ndarray, rows: int, classes: int, what: str, shape: tuple[int, ...]) -> np.ndarray:
    """Labels as int64 (N,), or a ValueError naming both shapes / the bad values."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != rows:
        raise ValueError(
            f"shape mismatch: {what} have shape {shape} but labels have shape {labels.shape}; "
            f"expected labels of shape ({rows},)"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers (class indices), got dtype {labels.dtype}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        bad = low if low < 0 else high
        raise ValueError(f"labels out of range: got class {bad}, but {what} have {classes} classes (0..{classes - 1})")
    return labels.astype(np.int64, copy=False)


def _check_matrix(values: np.ndarray, what: str) -> np.ndarray:
    """A non-empty, finite float (N, K) matrix with K >= 2, or a ValueError naming the problem."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (samples, classes), got shape {values.shape}")
    if values.size == 0:
        raise ValueError(f"empty input: {what} have shape {values.shape}; need at least one sample and two classes")
    if values.shape[1] < 2:
        raise ValueError(f"{what} have shape {values.shape}: need at least two classes")
    if not np.issubdtype(values.dtype, np.floating):
        raise ValueError(f"{what} must be floating point, got dtype {values.dtype}")
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"non-finite {what}: {int(bad.sum())} of {values.size} values are NaN or infinite")
    return values


def _check_inputs(logits: np.ndarray, labels: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    _check_bins(bins)
    logits = _check_matrix(logits, "logits")
    labels = _check_labels(labels, logits.shape[0], logits.shape[1], "logits", logits.shape)
    return logits, labels


def _check_temperature(temperature: float) -> float:
    value = float(temperature)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return value


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) as float32 (N, K)."""
    t = _check_temperature(temperature)
    logits = _check_matrix(logits, "logits")
    scaled = logits.astype(np.float64) / t
    scaled -= scaled.max(axis=1, keepdims=True)  # stable softmax: the largest exponent is 0
    exp = np.exp(scaled)
    probabilities: np.ndarray = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return probabilities


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Top-1 ECE over `bins` equal-width confidence bins: sum over bins of |accuracy - confidence| * share."""
    _check_bins(bins)
    probabilities = _check_matrix(probabilities, "probabilities")
    labels = _check_labels(labels, probabilities.shape[0], probabilities.shape[1], "probabilities", probabilities.shape)
    if probabilities.min() < 0 or probabilities.max() > 1 + _ROW_SUM_TOLERANCE:
        raise ValueError("probabilities must lie in [0, 1]; for logits use apply_temperature(logits, T) first")
    row_gap = float(np.abs(probabilities.sum(axis=1) - 1).max())
    if row_gap > _ROW_SUM_TOLERANCE:
        raise ValueError(
            f"probabilities rows must sum to 1 (largest gap {row_gap:.3g}); for logits use apply_temperature first"
        )
    # Imported here: torchmetrics pulls in torchvision and costs seconds at import, which every other user of
    # rooivalk.export would pay for nothing.
    from torchmetrics.functional.classification import multiclass_calibration_error

    # torchmetrics treats any value outside [0, 1] as a logit and softmaxes the whole batch again, so rounding
    # noise just above 1 must not reach it.
    preds = torch.from_numpy(np.clip(probabilities, 0.0, 1.0).astype(np.float32))
    ece = multiclass_calibration_error(
        preds, torch.from_numpy(labels), num_classes=probabilities.shape[1], n_bins=int(bins), norm="l1"
    )
    return float(ece)


def _nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    return float(F.cross_entropy(logits / temperature, labels))


def _fit_log_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """argmin over log T of the NLL, by LBFGS with a strong-Wolfe line search (the recipe of Guo et al.)."""
    log_t = torch.zeros(1, dtype=logits.dtype, requires_grad=True)  # start at T = 1
    optimizer = torch.optim.LBFGS(
        [log_t], lr=1.0, max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        t = torch.exp(log_t.clamp(-_LOG_T_BOUND, _LOG_T_BOUND))
        loss = F.cross_entropy(logits / t, labels)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]  # torch leaves it unannotated
    return float(log_t.detach().clamp(-_LOG_T_BOUND, _LOG_T_BOUND))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bins: int = 15) -> TemperatureFit:
    """Fit T on validation logits (N, K) and labels (N,); report ECE and NLL before (T=1) and after."""
    logits, labels = _check_inputs(logits, labels, bins)
    # float64: the objective is flat near its minimum, and float32 rounding would stop LBFGS early.
    # Callers may run under torch.no_grad() or inference_mode; tensors made inside inference mode cannot be
    # saved for backward, so they are created inside the block too.
    with torch.inference_mode(False), torch.enable_grad():
        z = torch.from_numpy(logits.astype(np.float64))
        y = torch.from_numpy(labels)
        temperature = math.exp(_fit_log_temperature(z, y))
    nll_before = _nll(z, y, 1.0)
    nll_after = _nll(z, y, temperature)
    if not math.isfinite(nll_after) or nll_after > nll_before:
        # Never hand back a T worse than leaving the model alone; LBFGS from T=1 should not get here.
        temperature, nll_after = 1.0, nll_before
    return TemperatureFit(
        temperature=temperature,
        ece_before=expected_calibration_error(apply_temperature(logits, 1.0), labels, bins),
        ece_after=expected_calibration_error(apply_temperature(logits, temperature), labels, bins),
        nll_before=nll_before,
        nll_after=nll_after,
        samples=int(logits.shape[0]),
        bins=int(bins),
    )


@dataclass(frozen=True)
class _Bins:
    accuracy: np.ndarray  # (bins,) mean correctness per bin; 0 where the bin is empty
    confidence: np.ndarray  # (bins,) mean top-1 confidence per bin
    counts: np.ndarray  # (bins,) samples per bin


def _bin_top1(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> _Bins:
    """Per-bin statistics with torchmetrics' edges (bucketize right=True on linspace(0, 1, bins + 1)), so the
    bars agree with the ECE in the legend; a confidence of exactly 1.0 joins the last bin here."""
    confidence = probabilities.max(axis=1).astype(np.float32)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1, dtype=np.float32)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    safe = np.maximum(counts, 1)  # empty bins report 0 rather than NaN
    accuracy = np.bincount(index, weights=correct, minlength=bins) / safe
    mean_conf = np.bincount(index, weights=confidence.astype(np.float64), minlength=bins) / safe
    return _Bins(accuracy=accuracy, confidence=mean_conf, counts=counts)


def reliability_diagram(
    logits: np.ndarray, labels: np.ndarray, temperature: float, path: str | Path, title: str, bins: int = 15
) -> Path:
    """PNG: per-bin accuracy vs confidence before (T=1) and after (T), the diagonal, both ECEs in the legend,
    and a small histogram of confidence counts. Written atomically; returns the path."""
    logits, labels = _check_inputs(logits, labels, bins)
    t = _check_temperature(temperature)
    # Figure + FigureCanvasAgg, not pyplot: the Agg backend without touching pyplot's global state or the
    # process-wide backend choice of whoever imported us.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 6.5))
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    centres = (np.arange(bins) + 0.5) / bins
    width = 0.45 / bins  # two bars side by side in each bin
    for offset, temp, colour, name in ((-0.5, 1.0, "tab:red", "T=1"), (0.5, t, "tab:blue", f"T={t:.3g}")):
        probs = apply_temperature(logits, temp)
        stats = _bin_top1(probs, labels, bins)
        ece = expected_calibration_error(probs, labels, bins)
        x = centres + offset * width
        top.bar(x, stats.accuracy, width=width, color=colour, alpha=0.75, label=f"{name}: ECE {ece:.4f}")
        bottom.bar(x, stats.counts, width=width, color=colour, alpha=0.75)
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=title)
    top.legend(loc="upper left")
    bottom.set(xlabel="top-1 confidence", ylabel="samples")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    target = Path(path)
    storage.write_bytes(target, buffer.getvalue())  # temp file + rename: no partial PNG is ever visible
    return target
