"""The report's figures as PNG bytes (matplotlib's Agg canvas on a bare Figure: no pyplot state, no
display, safe in the run's process after a pipeline finished)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from rooivalk.cli.report_data import Curve, Reliability

DPI = 100


def _png(figure: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _figure(width: float, height: float, rows: int = 1, **kwargs: Any) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(rows, 1, squeeze=False, **kwargs)[:, 0]


def stage_spans(stages: list[str]) -> list[tuple[str, int, int]]:
    """(stage, first epoch, last epoch) of each run of equal stage names, epochs counted from 1 across stages."""
    spans: list[tuple[str, int, int]] = []
    for index, stage in enumerate(stages, start=1):
        if spans and spans[-1][0] == stage:
            spans[-1] = (stage, spans[-1][1], index)
        else:
            spans.append((stage, index, index))
    return spans


def training_curves(curve: Curve) -> bytes:
    """Losses and validation accuracy by epoch (top), the learning rate at each epoch's end (bottom), with
    a dashed line where each stage starts, labelled with its name."""
    figure, (top, bottom) = _figure(8, 5.2, rows=2, sharex=True, height_ratios=[3, 1.3])
    epochs = np.arange(1, len(curve.stages) + 1)
    top.plot(epochs, curve.train_loss, "o-", ms=3, label="train loss", color="tab:blue")
    top.plot(epochs, curve.val_loss, "s-", ms=3, label="val loss", color="tab:orange")
    top.set_ylabel("loss")
    accuracy = top.twinx()
    accuracy.plot(epochs, curve.val_accuracy, "^-", ms=3, label=curve.score_label, color="tab:green")
    accuracy.set_ylabel(curve.score_label)
    lines = top.get_lines() + accuracy.get_lines()
    top.legend(lines, [str(line.get_label()) for line in lines], loc="center right", fontsize=8)
    top.set_title(f"{curve.model}: training curves")
    lr = np.asarray(curve.lr, dtype=float)
    bottom.plot(epochs, lr, ".-", color="tab:purple")
    if np.all(lr[np.isfinite(lr)] > 0) and np.isfinite(lr).any():
        from matplotlib.ticker import FormatStrFormatter, NullFormatter

        bottom.set_yscale("log")
        # Plain 1e-03 labels: the log axis' default 10^x labels go through mathtext, whose display font
        # is not on every machine (matplotlib then logs a warning per label, after the run's own log closed).
        bottom.yaxis.set_major_formatter(FormatStrFormatter("%.0e"))
        bottom.yaxis.set_minor_formatter(NullFormatter())
    bottom.set_ylabel("LR (epoch end)")
    bottom.set_xlabel("epoch (counted across stages)")
    for stage, first, _ in stage_spans(curve.stages):
        for axis in (top, bottom):
            axis.axvline(first - 0.5, color="grey", linestyle="--", linewidth=0.8)
        top.annotate(
            stage, (first - 0.4, 1.0), xycoords=("data", "axes fraction"), va="top", fontsize=8, color="dimgrey"
        )
    return _png(figure)


def confusion_matrix(matrix: Sequence[Sequence[float]], classes: list[str], title: str) -> bytes:
    """Counts, rows the true class, columns the predicted one; each cell's count written on it."""
    values = np.asarray(matrix, dtype=float)
    size = max(4.0, 0.55 * len(classes) + 2.5)
    figure, (axis,) = _figure(size + 1, size)
    image = axis.imshow(values, cmap="Blues")
    figure.colorbar(image, ax=axis, shrink=0.8)
    ticks = np.arange(len(classes))
    axis.set_xticks(ticks, classes, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(ticks, classes, fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    if len(classes) <= 20:  # beyond that the numbers overlap: the colour says enough
        threshold = values.max() / 2 if values.size else 0
        for (row, column), value in np.ndenumerate(values):
            axis.text(
                column,
                row,
                f"{value:.0f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > threshold else "black",
            )
    return _png(figure)


def per_class_bars(per_class: dict[str, dict[str, float]], title: str) -> bytes:
    """Precision, recall and F1 side by side for each class."""
    names = list(per_class)
    figure, (axis,) = _figure(max(6.0, 0.6 * len(names) + 2), 3.6)
    x = np.arange(len(names))
    for offset, key in zip((-0.27, 0.0, 0.27), ("precision", "recall", "f1"), strict=True):
        axis.bar(x + offset, [per_class[name].get(key, np.nan) for name in names], width=0.27, label=key)
    axis.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    axis.set_ylim(0, 1.05)
    axis.set_title(title)
    axis.legend(fontsize=8, loc="lower right")
    return _png(figure)


def reliability_diagram(reliability: Reliability, title: str) -> bytes:
    """Accuracy against mean confidence per bin (the diagonal is perfect calibration), with each bin's
    share of the samples below."""
    centre, confidence, accuracy, count = reliability.table()
    figure, (top, bottom) = _figure(5.5, 5.5, rows=2, sharex=True, height_ratios=[3, 1])
    width = 1.0 / reliability.bins
    top.bar(centre, np.nan_to_num(accuracy), width=width * 0.95, edgecolor="black", label="accuracy")
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.plot(confidence, accuracy, "o", color="tab:red", ms=4, label="mean confidence")
    top.set_ylabel("accuracy")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_title(f"{title} (ECE {reliability.ece():.4f})")
    top.legend(fontsize=8, loc="upper left")
    bottom.bar(centre, count / max(1.0, count.sum()), width=width * 0.95, color="tab:grey")
    bottom.set_ylabel("share")
    bottom.set_xlabel(f"top-1 confidence ({reliability.split} split, {len(reliability.correct)} samples)")
    return _png(figure)


def degraded_bars(degraded: list[dict[str, Any]], title: str) -> bytes:
    """Fusion accuracy with each set of sensors removed (full system first)."""
    labels = [" + ".join(row.get("removed") or []) or "none" for row in degraded]
    figure, (axis,) = _figure(max(6.0, 0.55 * len(labels) + 2), 3.4)
    # colour by how many sensors are gone: none, one, two, three or more
    palette = ("tab:green", "tab:orange", "tab:red", "tab:purple")
    colours = [palette[min(len(row.get("removed") or []), 3)] for row in degraded]
    axis.bar(np.arange(len(labels)), [row.get("accuracy", np.nan) for row in degraded], color=colours)
    axis.set_xticks(np.arange(len(labels)), labels, rotation=35, ha="right", fontsize=8)
    axis.set_ylabel("test accuracy")
    axis.set_xlabel("sensors removed")
    axis.set_ylim(0, 1.05)
    axis.set_title(title)
    return _png(figure)
