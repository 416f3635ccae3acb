"""What the evaluate step writes and returns, whatever the model kind (image, sequence, table)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from rooivalk import storage
from rooivalk.evaluation.gates import GateFailure, check_gates, describe_failures
from rooivalk.evaluation.metrics import plot_confusion_matrix
from rooivalk.evaluation.requirements import measure_requirements, per_class_figures
from rooivalk.plan import Plan

REPORT_FILE = "evaluation.json"
CONFUSION_PNG = "confusion_matrix.png"
REFERENCE_DIR = "reference"  # the reference profile for drift monitoring (rooivalk.evaluation.profile)


@dataclass
class EvaluateResult:
    metrics: dict[str, float]
    report: dict[str, Any]
    gates: list[dict[str, Any]]
    passed: bool
    artifacts: dict[str, str] = field(default_factory=dict)  # file name -> sha256


def scored_metrics(report: dict[str, Any], samples: int) -> dict[str, float]:
    """`test_<name>` for every float of a classification report, and `test_samples`."""
    metrics = {f"test_{k}": float(v) for k, v in report.items() if isinstance(v, float)}
    metrics["test_samples"] = float(samples)
    return metrics


def finish_evaluation(
    plan: Plan,
    report: dict[str, Any],
    metrics: dict[str, float],
    eval_dir: str,
    split: str,
    dataset_version: str,
    reference_uri: str | None,
) -> EvaluateResult:
    """Check the gates, measure the requirements, complete and write the report; GateFailure (after
    writing) when the plan says so."""
    metrics.update(per_class_figures(plan.requirements, report["per_class"], "test_", "the model"))
    gates = check_gates(plan.evaluation.gates, metrics)
    passed = all(g["passed"] for g in gates)
    report.update(
        {
            "split": split,
            "gates": gates,
            "requirements": measure_requirements(plan.requirements, metrics),
            "passed": passed,
            "dataset_version": dataset_version,
            "reference_profile": reference_uri,
        }
    )
    artifacts = write_report(plan, report, eval_dir)
    raise_on_failed_gates(plan, report, eval_dir)
    return EvaluateResult(metrics, report, gates, passed, artifacts)


def write_report(plan: Plan, report: dict[str, Any], eval_dir: str) -> dict[str, str]:
    """evaluation.json and the confusion matrix PNG in `eval_dir` (a local folder); {file: sha256}."""
    png_path = f"{eval_dir}/{CONFUSION_PNG}"
    os.makedirs(eval_dir, exist_ok=True)
    title = f"{plan.name}: {report['split']} accuracy {report['accuracy']:.4f}"
    plot_confusion_matrix(report["confusion_matrix"], report["classes"], png_path, title)
    return {
        REPORT_FILE: storage.write_text(f"{eval_dir}/{REPORT_FILE}", json.dumps(report, indent=2)),
        CONFUSION_PNG: storage.sha256_file(png_path),
    }


def raise_on_failed_gates(plan: Plan, report: dict[str, Any], eval_dir: str) -> None:
    """GateFailure naming the failed gates and the worst classes, when the plan fails on gates."""
    if report["passed"] or not plan.evaluation.fail_on_gate:
        return
    worst = ", ".join(f"{score} {name!r}" for score, name in report["worst_class"].items())
    raise GateFailure(
        f"evaluation gates failed: {describe_failures(report['gates'])} (worst classes: {worst}; "
        f"report: {eval_dir}/{REPORT_FILE})"
    )
