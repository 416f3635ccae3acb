"""Scores of a trained multi-sensor system on the test split, their Markdown tables, and its reference profile."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from rooivalk import storage
from rooivalk.data.multisensor_dataset import MultiSensorDataset, load_multisensor
from rooivalk.evaluation.degraded import (
    degraded_table,
    false_positive_rate,
    per_class_scores,
    summarize_degraded,
)
from rooivalk.evaluation.evaluate import EvaluateResult
from rooivalk.evaluation.gates import GateFailure, check_gates, describe_failures
from rooivalk.evaluation.metrics import worst_classes
from rooivalk.evaluation.profile import ProfileInfo, build_profile, prediction_columns, save_profile, signal_statistics
from rooivalk.evaluation.requirements import measure_requirements, per_class_figures
from rooivalk.features.fusion_features import load_fusion_features
from rooivalk.models.fusion_artifacts import load_fusion_model
from rooivalk.models.fusion_inference import FusionFeatures, predict_fusion, predict_fusion_probabilities
from rooivalk.models.fusion_transformer import FusionTransformer
from rooivalk.models.inference import batched_logits
from rooivalk.models.sensor_artifacts import SensorTrainResult, load_sensor_models
from rooivalk.models.sensor_encoding import sensor_split
from rooivalk.plan import Plan


def degraded_mode(
    model: FusionTransformer, dataset: MultiSensorDataset, features: FusionFeatures, rows: np.ndarray
) -> list[dict[str, Any]]:
    """Fusion accuracy on `rows` with no sensor, each sensor and each pair of sensors removed."""

    def predict(mask: np.ndarray) -> np.ndarray:
        full = features.present.copy()
        full[rows] = mask
        return predict_fusion(model, features, rows, full)

    return degraded_table(predict, features.present[rows], dataset.labels[rows], dataset.sensor_names)


def _fusion_scores(
    model: FusionTransformer, dataset: MultiSensorDataset, features: FusionFeatures, rows: np.ndarray
) -> dict[str, Any]:
    labels = dataset.labels[rows]
    predictions = predict_fusion(model, features, rows)
    table = degraded_mode(model, dataset, features, rows)
    return {
        "accuracy": float((predictions == labels).mean()),
        "false_positive_rate": false_positive_rate(labels, predictions, dataset.info.classes),
        "per_class": per_class_scores(labels, predictions, dataset.info.classes),
        "degraded": table,
        "degraded_summary": summarize_degraded(table),
    }


def evaluate_system(
    dataset: MultiSensorDataset,
    sensors: dict[str, SensorTrainResult],
    features: FusionFeatures,
    fusion: FusionTransformer,
    split: str = "test",
) -> dict[str, Any]:
    """Each sensor model alone on the split's events that have its sample, fusion on all of them,
    and fusion with each sensor and each pair removed."""
    rows = dataset.split_mask(split)
    scores = {}
    for name, result in sensors.items():
        present = dataset.present_of(name) & rows
        scores[name] = {"accuracy": sensor_test_accuracy(result, dataset, split), "events": int(present.sum())}
    return {
        "split": split,
        "events": int(rows.sum()),
        "sensors": scores,
        "fusion": _fusion_scores(fusion, dataset, features, rows),
    }


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The numbers gates and MLflow read: fusion_test_accuracy, fusion_false_positive_rate,
    fusion_min_class_precision/_recall/_f1 (the worst class), fusion_one_missing_mean/_worst,
    fusion_two_missing_mean/_worst, <sensor>_test_accuracy."""
    fusion = results["fusion"]
    split = results["split"]
    metrics = {
        f"fusion_{split}_accuracy": fusion["accuracy"],
        "fusion_false_positive_rate": fusion["false_positive_rate"],
        **{f"fusion_{key}": value for key, value in worst_classes(fusion["per_class"])[0].items()},
        **{f"fusion_{key}": value for key, value in fusion["degraded_summary"].items() if key != "full"},
        **{f"{name}_{split}_accuracy": scores["accuracy"] for name, scores in results["sensors"].items()},
    }
    return {key: float(value) for key, value in metrics.items()}


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def render_markdown(results: dict[str, Any]) -> list[str]:
    """Markdown lines: sensors vs fusion, per class, degraded mode."""
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
    lines += ["", "| sensors removed | fusion (modality dropout) |", "| --- | ---: |"]
    for row in fusion["degraded"]:
        lines.append(f"| {', '.join(row['removed']) or 'none'} | {_pct(row['accuracy'])} |")
    summary = fusion["degraded_summary"]
    lines += [
        "",
        f"One sensor missing: mean {_pct(summary['one_missing_mean'])}, worst {_pct(summary['one_missing_worst'])} "
        f"(full fusion {_pct(summary['full'])}); two missing: mean {_pct(summary['two_missing_mean'])}, "
        f"worst {_pct(summary['two_missing_worst'])}.",
    ]
    return lines


REPORT_JSON = "evaluation.json"
REPORT_MD = "evaluation.md"
REFERENCE_DIR = "reference"  # the reference profile for drift monitoring (rooivalk.evaluation.profile)


def write_reference_profile(
    uri: str,
    dataset: MultiSensorDataset,
    features: FusionFeatures,
    fusion: FusionTransformer,
    classes: list[str],
    model_name: str,
    split: str = "val",
) -> ProfileInfo | None:
    """The reference profile of the split's events at `uri`: per sensor the signal statistics of its
    raw samples (zeros and `<sensor>_present` "0" where absent) and its cached embeddings, plus the
    fusion model's prediction and confidence with every present sensor. None (nothing written) when
    the split is empty."""
    rows = dataset.split_mask(split)
    if not rows.any():
        return None
    columns: dict[str, np.ndarray] = {}
    for name in dataset.sensor_names:
        columns.update(signal_statistics(name, dataset.arrays[name][rows], dataset.present_of(name)[rows]))
    columns.update(prediction_columns(predict_fusion_probabilities(fusion, features, rows), classes))
    embeddings = {name: matrix[rows] for name, matrix in features.features.items()}
    frame, info = build_profile(columns, embeddings, dataset.info.version_id, model_name, split)
    return save_profile(uri, frame, info)


def evaluate_fusion_step(
    plan: Plan, dataset_dir: str, model_dirs: list[str], features_dir: str, fusion_dir: str, report_dir: str
) -> EvaluateResult:
    """The pipeline's evaluation: scores (evaluate_system) on the test split, written as JSON and
    Markdown to `report_dir` before the plan's gates are checked, so a failing gate loses nothing,
    and the reference profile for drift monitoring (validation split) in `report_dir`/reference.
    Raises GateFailure when a gate fails and evaluation.fail_on_gate is set."""
    dataset = load_multisensor(dataset_dir)
    sensors = load_sensor_models(model_dirs, dataset)
    features, _ = load_fusion_features(features_dir)
    fusion, fusion_info = load_fusion_model(fusion_dir)
    if fusion_info.dataset_version != dataset.info.version_id:
        raise ValueError(
            f"{fusion_dir}: fusion trained on {fusion_info.dataset_version}, not {dataset.info.version_id}"
        )
    results = evaluate_system(dataset, sensors, features, fusion)
    metrics = flat_metrics(results)
    metrics |= per_class_figures(plan.requirements, results["fusion"]["per_class"], "fusion_test_", "the fusion")
    gates = check_gates(plan.evaluation.gates, metrics, missing_fails=True)
    reference_uri = f"{report_dir}/{REFERENCE_DIR}"
    model_name = plan.tracking.registered_model or plan.name
    reference = write_reference_profile(reference_uri, dataset, features, fusion, fusion_info.classes, model_name)
    report = {
        "results": results,
        "metrics": metrics,
        "gates": gates,
        "requirements": measure_requirements(plan.requirements, metrics),
        "dataset_version": dataset.info.version_id,
        "features_key": fusion_info.features_key,
        "plan_digest": plan.digest(),
        "reference_profile": reference_uri if reference is not None else None,
    }
    storage.write_text(f"{report_dir}/{REPORT_JSON}", json.dumps(report, indent=2, default=str))
    lines = [f"# {plan.name}: evaluation on the {results['split']} split", "", *render_markdown(results)]
    if reference is not None:
        lines += [
            "",
            f"Reference profile for drift monitoring ({reference.rows} {reference.split} events): `{reference_uri}`",
        ]
    storage.write_text(f"{report_dir}/{REPORT_MD}", "\n".join(lines) + "\n")
    passed = all(gate["passed"] for gate in gates)
    if not passed and plan.evaluation.fail_on_gate:
        raise GateFailure(f"evaluation gates failed: {describe_failures(gates)} (report: {report_dir}/{REPORT_JSON})")
    return EvaluateResult(metrics=metrics, report=report, gates=gates, passed=passed)


def sensor_test_accuracy(result: SensorTrainResult, dataset: MultiSensorDataset, split: str = "test") -> float:
    """Accuracy of the sensor model alone on the split's events that have its sample."""
    inputs, labels = sensor_split(dataset, result.name, split, result.encoding)
    if not len(labels):
        return float("nan")
    logits = batched_logits(
        result.model, {"inputs": inputs}, 256, lambda model, batch: model(batch["inputs"]), dataset.num_classes
    )
    return float((logits.argmax(1).numpy() == labels).mean())
