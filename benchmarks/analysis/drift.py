"""Statistics of the drift benchmark's samples: latency percentiles, the RSS slope, metric sums."""

from __future__ import annotations

import numpy as np


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    values = np.asarray(seconds) * 1e3
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
        "max_ms": round(float(values.max()), 3),
    }


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    if len(samples) < 2:
        return float("nan")
    t, rss = np.asarray(samples).T
    return float(np.polyfit(t / 60.0, rss, 1)[0])


def metric_value(text: str, name: str) -> float:
    """The sum of a metric's samples in Prometheus text (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total
