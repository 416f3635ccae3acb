"""Multi-sensor evaluation: fusion against each sensor alone, per-class scores, and degraded mode.

Degraded mode removes sensors at inference (their tokens masked, as when a sensor is down) and
scores fusion again: every single sensor removed, and every pair. The false-positive rate is the
share of non-drone events (birds, aircraft, clutter) that the system calls a drone: the alarm a
counter-drone operator would see.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

DRONE_CLASSES = ("commercial_drone", "military_drone")


def false_positive_rate(labels: np.ndarray, predictions: np.ndarray, classes: list[str]) -> float:
    drone = np.array([name in DRONE_CLASSES for name in classes])
    negatives = ~drone[labels]
    if not negatives.any():
        return float("nan")
    return float(drone[predictions][negatives].mean())


def per_class_scores(labels: np.ndarray, predictions: np.ndarray, classes: list[str]) -> dict[str, dict[str, float]]:
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=np.arange(len(classes)), zero_division=0
    )
    return {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    }


def removal_sets(sensors: list[str], max_removed: int = 2) -> list[tuple[str, ...]]:
    """(), each single sensor, each pair (up to `max_removed`), in a stable order."""
    return [combo for size in range(max_removed + 1) for combo in combinations(sensors, size)]


def degraded_table(
    predict: Any, present: np.ndarray, labels: np.ndarray, sensors: list[str], max_removed: int = 2
) -> list[dict[str, Any]]:
    """Accuracy with each removal set; `predict(present_mask) -> predictions` over the same events."""
    rows = []
    for removed in removal_sets(sensors, max_removed):
        mask = present.copy()
        for name in removed:
            mask[:, sensors.index(name)] = False
        predictions = predict(mask)
        rows.append(
            {
                "removed": list(removed),
                "accuracy": float((predictions == labels).mean()),
                "events_without_any_sensor": int((~mask.any(axis=1)).sum()),
            }
        )
    return rows


def summarize_degraded(table: list[dict[str, Any]]) -> dict[str, float]:
    full = next(row["accuracy"] for row in table if not row["removed"])
    singles = [row["accuracy"] for row in table if len(row["removed"]) == 1]
    pairs = [row["accuracy"] for row in table if len(row["removed"]) == 2]
    return {
        "full": full,
        "one_missing_mean": float(np.mean(singles)) if singles else float("nan"),
        "one_missing_worst": float(np.min(singles)) if singles else float("nan"),
        "two_missing_mean": float(np.mean(pairs)) if pairs else float("nan"),
        "two_missing_worst": float(np.min(pairs)) if pairs else float("nan"),
    }
