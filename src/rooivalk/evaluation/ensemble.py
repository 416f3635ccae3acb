"""Scoring ensembles: every member alone and their soft-voting ensemble on the same rows (the
weights and the combination live in rooivalk.models.ensemble_weights)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rooivalk.evaluation.metrics import classification_metrics
from rooivalk.models.ensemble_weights import (
    ENSEMBLE,
    combine,
    fit_weights,
    label_indices,
    log_loss,
    normalize_weights,
    probability_matrices,
)

Criterion = Literal["log_loss", "accuracy", "macro_f1"]
__all__ = ["ENSEMBLE", "EnsembleReport", "MemberScore", "combine", "fit_weights", "normalize_weights", "score_ensemble"]


@dataclass(frozen=True)
class MemberScore:
    """One row of an ensemble report: a member alone, or the ensemble (weight None)."""

    name: str
    weight: float | None
    log_loss: float
    metrics: dict[str, Any]  # rooivalk.evaluation.metrics.classification_metrics

    def value(self, criterion: Criterion) -> float:
        return self.log_loss if criterion == "log_loss" else float(self.metrics[criterion])


@dataclass(frozen=True)
class EnsembleReport:
    """Every member alone (in the order given), then the ensemble, on one split."""

    weights: dict[str, float]
    scores: list[MemberScore]
    best: str  # the row with the best `criterion`; on a tie, the first row
    criterion: Criterion

    @property
    def ensemble(self) -> MemberScore:
        return self.scores[-1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: weights, best, criterion, and each row's log-loss and metrics."""
        rows = {
            score.name: {"weight": score.weight, "log_loss": score.log_loss, **score.metrics} for score in self.scores
        }
        return {"weights": self.weights, "best": self.best, "criterion": self.criterion, "scores": rows}


def score_ensemble(
    test_probabilities: Mapping[str, np.ndarray],
    test_labels: np.ndarray,
    weights: Mapping[str, float],
    classes: list[str],
    criterion: Criterion = "log_loss",
) -> EnsembleReport:
    """Score every member alone and their weighted ensemble on the same rows; say which is best."""
    matrices = probability_matrices(test_probabilities)
    rows, count = next(iter(matrices.values())).shape
    if len(classes) != count:
        raise ValueError(f"{len(classes)} class names for probabilities of {count} classes")
    labels = label_indices(test_labels, rows, count)
    normalized = normalize_weights(weights, list(matrices))
    rows_scored: list[tuple[str, float | None, np.ndarray]] = [
        (name, normalized[name], matrix) for name, matrix in matrices.items()
    ]
    rows_scored.append((ENSEMBLE, None, combine(matrices, normalized)))
    scores = [
        MemberScore(name, weight, log_loss(matrix, labels), classification_metrics(labels, matrix.argmax(1), classes))
        for name, weight, matrix in rows_scored
    ]
    sign = 1.0 if criterion == "log_loss" else -1.0  # lower log-loss is better; higher accuracy/F1
    best = min(scores, key=lambda score: sign * score.value(criterion))
    return EnsembleReport(normalized, scores, best.name, criterion)


def render_ensemble_markdown(report: EnsembleReport) -> str:
    """The report as a Markdown table, one row per member and one for the ensemble, best marked."""
    lines = [
        "| model | weight | log-loss | accuracy | macro F1 | min class recall | best |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for score in report.scores:
        weight = "" if score.weight is None else f"{score.weight:.3f}"
        min_recall = score.metrics.get("min_class_recall", float("nan"))
        lines.append(
            f"| {score.name} | {weight} | {score.log_loss:.4f} | {score.metrics['accuracy']:.4f} "
            f"| {score.metrics['macro_f1']:.4f} | {min_recall:.4f} | {'yes' if score.name == report.best else ''} |"
        )
    lines.append("")
    lines.append(f"Best by {report.criterion.replace('_', '-')}: {report.best}.")
    return "\n".join(lines) + "\n"
