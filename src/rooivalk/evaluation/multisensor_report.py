"""Scores of a trained multi-sensor system on the test split, and their Markdown tables."""

from __future__ import annotations

from typing import Any

import numpy as np

from rooivalk.evaluation.degraded import (
    degraded_table,
    false_positive_rate,
    per_class_scores,
    summarize_degraded,
)
from rooivalk.models.fusion import FusionTransformer
from rooivalk.training.fusion import predict_fusion
from rooivalk.training.multisensor import MultiSensorRun
from rooivalk.training.sensors import sensor_test_accuracy


def _fusion_scores(model: FusionTransformer, run: MultiSensorRun, rows: np.ndarray) -> dict[str, Any]:
    dataset, features = run.dataset, run.features
    labels = dataset.labels[rows]
    predictions = predict_fusion(model, features, rows)
    sensors = dataset.sensor_names

    def predict(mask: np.ndarray) -> np.ndarray:
        full = features.present.copy()
        full[rows] = mask
        return predict_fusion(model, features, rows, full)

    table = degraded_table(predict, features.present[rows], labels, sensors)
    return {
        "accuracy": float((predictions == labels).mean()),
        "false_positive_rate": false_positive_rate(labels, predictions, dataset.info.classes),
        "per_class": per_class_scores(labels, predictions, dataset.info.classes),
        "degraded": table,
        "degraded_summary": summarize_degraded(table),
    }


def evaluate_multisensor(run: MultiSensorRun, split: str = "test") -> dict[str, Any]:
    rows = run.dataset.split_mask(split)
    sensors = {}
    for name, result in run.sensors.items():
        present = run.dataset.present_of(name) & rows
        sensors[name] = {"accuracy": sensor_test_accuracy(result, run.dataset, split), "events": int(present.sum())}
    results: dict[str, Any] = {
        "split": split,
        "events": int(rows.sum()),
        "sensors": sensors,
        "fusion": _fusion_scores(run.fusion, run, rows),
    }
    if run.ablation is not None:
        results["fusion_no_dropout"] = _fusion_scores(run.ablation, run, rows)
    return results


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def render_markdown(results: dict[str, Any]) -> list[str]:
    """Markdown lines: sensors vs fusion, per class, degraded mode (with and without modality dropout)."""
    fusion = results["fusion"]
    lines = ["| model | test accuracy | test events |", "| --- | ---: | ---: |"]
    for name, scores in results["sensors"].items():
        lines.append(f"| {name} alone | {_pct(scores['accuracy'])} | {scores['events']} |")
    lines.append(f"| **fusion** | **{_pct(fusion['accuracy'])}** | {results['events']} |")
    lines += ["", f"False-positive rate (non-drone events called a drone): {_pct(fusion['false_positive_rate'])}", ""]
    lines += ["| class | precision | recall | F1 | support |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, scores in fusion["per_class"].items():
        p, r, f1 = scores["precision"], scores["recall"], scores["f1"]
        lines.append(f"| {name} | {p:.3f} | {r:.3f} | {f1:.3f} | {scores['support']} |")
    ablation = results.get("fusion_no_dropout")
    header = "| sensors removed | fusion (modality dropout) |" + (" fusion (no dropout) |" if ablation else "")
    lines += ["", header, "| --- | ---: |" + (" ---: |" if ablation else "")]
    for index, row in enumerate(fusion["degraded"]):
        removed = ", ".join(row["removed"]) or "none"
        cells = f"| {removed} | {_pct(row['accuracy'])} |"
        if ablation:
            cells += f" {_pct(ablation['degraded'][index]['accuracy'])} |"
        lines.append(cells)
    summary = fusion["degraded_summary"]
    lines += [
        "",
        f"One sensor missing: mean {_pct(summary['one_missing_mean'])}, worst {_pct(summary['one_missing_worst'])} "
        f"(full fusion {_pct(summary['full'])}); two missing: mean {_pct(summary['two_missing_mean'])}, "
        f"worst {_pct(summary['two_missing_worst'])}.",
    ]
    if ablation:
        other = ablation["degraded_summary"]
        lines.append(
            f"Without modality dropout: one missing mean {_pct(other['one_missing_mean'])}, worst "
            f"{_pct(other['one_missing_worst'])}; two missing mean {_pct(other['two_missing_mean'])}; "
            f"full {_pct(other['full'])}."
        )
    return lines
