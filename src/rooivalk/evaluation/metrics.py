"""Classification metrics from sklearn, and the confusion-matrix plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

PER_CLASS_SCORES = ("precision", "recall", "f1")


def worst_classes(per_class: dict[str, dict[str, Any]]) -> tuple[dict[str, float], dict[str, str]]:
    """The lowest per-class precision, recall and F1 as `min_class_<score>` (a gate with `min: x` on one
    of them asks that every class reach x), and the class each belongs to. Classes without samples in
    the split (support 0) are left out: their recall is undefined, not zero."""
    present = {name: scores for name, scores in per_class.items() if scores.get("support", 1) > 0}
    values: dict[str, float] = {}
    names: dict[str, str] = {}
    for score in PER_CLASS_SCORES:
        if present:
            name = min(present, key=lambda c: present[c][score])
            values[f"min_class_{score}"], names[score] = float(present[name][score]), name
    return values, names


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/FPR with the lowest of each (and its class), macro averages
    and the confusion matrix."""
    indices = list(range(len(classes)))
    matrix = confusion_matrix(labels, predictions, labels=indices)  # rows: true, columns: predicted
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=indices, zero_division=0
    )
    # False-positive rate of class k, one-vs-rest: predicted k among samples that are not k.
    false_positives = matrix.sum(axis=0) - np.diag(matrix)
    negatives = matrix.sum() - matrix.sum(axis=1)
    fpr = np.divide(false_positives, negatives, out=np.zeros(len(classes)), where=negatives > 0)
    per_class = {
        name: {
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "false_positive_rate": float(fpr[k]),
            "support": int(support[k]),
        }
        for k, name in enumerate(classes)
    }
    lowest, worst = worst_classes(per_class)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        **lowest,
        "worst_class": worst,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "false_positive_rate": float(fpr.mean()),
        "max_false_positive_rate": float(fpr.max()),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def plot_confusion_matrix(matrix: list[list[int]], classes: list[str], path: str | Path, title: str) -> None:
    """Row-normalized heat map with counts, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(classes) <= 20:
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
