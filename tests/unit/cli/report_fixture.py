"""A small synthetic run folder with everything the training report reads: summary.json, events.jsonl with
two stages of epoch_end events, the evaluation report (per-class, confusion matrix, requirements), the
reference profile and the dataset's labels (reliability), and the export report's variants. No pipeline
runs: the files are written as the steps write them, in milliseconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CLASSES = ["bird", "drone", "plane"]
REQUIREMENTS = [
    {
        "id": "REQ-1",
        "text": "Accuracy on the test split",
        "metric": "test_accuracy",
        "min": 0.8,
        "max": None,
        "value": 0.9,
        "passed": True,
    },
    {
        "id": "REQ-2",
        "text": "False-positive rate",
        "metric": "test_false_positive_rate",
        "min": None,
        "max": 0.01,
        "value": 0.05,
        "passed": False,
    },
]


def _epochs(model: str, step: str) -> list[dict[str, Any]]:
    rows = []
    for k, (stage, epoch) in enumerate([("head", 1), ("head", 2), ("all", 1), ("all", 2), ("all", 3)]):
        rows.append(
            {
                "event": "epoch_end",
                "stage": stage,
                "epoch": epoch,
                "train_loss": 1.2 - 0.2 * k,
                "val_loss": 1.1 - 0.15 * k,
                "val_accuracy": 0.5 + 0.08 * k,
                "lr_at_epoch_end": 1e-3 / (k + 1),
                "model": model,
                "step": step,
            }
        )
    return rows


def _write_dataset(root: Path) -> Path:
    dataset = root / "dataset"
    dataset.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(CLASSES), 60)
    splits = np.repeat([0, 1, 2], 20)  # train, val, test
    np.save(dataset / "labels.npy", labels)
    np.save(dataset / "splits.npy", splits.astype(np.int8))
    (dataset / "dataset.json").write_text(json.dumps({"classes": CLASSES, "version_id": "ds-fixture"}))
    # the reference profile: the val split's predictions (right 15 times of 20) and confidences
    val = labels[splits == 1]
    predicted = np.where(np.arange(20) < 15, val, (val + 1) % len(CLASSES))
    frame = pd.DataFrame({"prediction": np.asarray(CLASSES)[predicted], "confidence": rng.uniform(0.4, 1.0, 20)})
    reference = root / "evaluation" / "reference"
    reference.mkdir(parents=True)
    frame.to_parquet(reference / "profile.parquet")
    (reference / "profile.json").write_text(json.dumps({"split": "val", "rows": 20, "model": "fixture"}))
    return reference


def _export_report(models: list[str]) -> dict[str, Any]:
    variant = {
        "test_accuracy": 0.9,
        "accuracy_drop": 0.0,
        "top1_agreement": 1.0,
        "latency_ms": 1.0,
        "latency_p95_ms": 1.2,
        "size_mb": 4.0,
        "passed": True,
        "reason": "shipped",
    }
    int8 = {**variant, "accuracy_drop": 0.004, "latency_ms": 0.5, "size_mb": 1.0}
    return {
        "models": {
            m: {
                "shipped": "int8_static",
                "variants": {"fp32": variant, "int8_static": int8},
                "measured": {"temperature": 1.2, "ece_before": 0.08, "ece_after": 0.03},
            }
            for m in models
        },
        "latency": {"batch_size": 1, "runs": 50},
        "environment": {"machine": "x86_64", "cpu_threads": 2, "gpu": None},
        "plan_digest": "f" * 64,
        "dataset_version": "ds-fixture",
    }


def make_run_folder(root: Path, system: bool = False) -> Path:
    """A succeeded run folder at `root`: one model (train_model ...) or, with `system`, two sensors and fusion."""
    reference = _write_dataset(root)
    evaluation: dict[str, Any] = {
        "split": "test",
        "reference_profile": str(reference),
        "plan_digest": "f" * 64,
        "dataset_version": "ds-fixture",
    }
    per_class = {
        c: {"precision": 0.9, "recall": 0.8, "f1": 0.85, "false_positive_rate": 0.02, "support": 7} for c in CLASSES
    }
    stages = [
        {
            "stage": "head",
            "epochs": 2,
            "steps": 10,
            "groups": {"head": 1e-3},
            "best_val_accuracy": 0.58,
            "seconds": 1,
            "trainable_params": 30,
            "trainable_share": 0.1,
        },
        {
            "stage": "all",
            "epochs": 3,
            "steps": 15,
            "groups": {"all": 1e-4},
            "best_val_accuracy": 0.82,
            "seconds": 2,
            "trainable_params": 300,
            "trainable_share": 1.0,
        },
    ]
    if system:
        models = ["optical", "radar", "fusion"]
        evaluation["results"] = {
            "split": "test",
            "sensors": {"optical": {"accuracy": 0.8}, "radar": {"accuracy": 0.7}},
            "fusion": {
                "accuracy": 0.9,
                "per_class": per_class,
                "degraded": [
                    {"removed": [], "accuracy": 0.9, "events_without_any_sensor": 0},
                    {"removed": ["optical"], "accuracy": 0.75, "events_without_any_sensor": 0},
                    {"removed": ["radar"], "accuracy": 0.85, "events_without_any_sensor": 0},
                ],
                "degraded_summary": {"full": 0.9},
            },
        }
        steps = {
            "ingest_events": {"status": "succeeded", "artifacts": {"dataset": {"uri": str(root / "dataset")}}},
            "train_sensor_optical": {"status": "succeeded", "stages": stages},
            "train_sensor_radar": {"status": "succeeded", "stages": stages},
            "train_fusion": {"status": "succeeded", "stages": stages[1:]},
            "evaluate_system": {
                "status": "succeeded",
                "metrics": {
                    "fusion_test_accuracy": 0.9,
                    "fusion_one_missing_mean": 0.8,
                    "fusion_one_missing_worst": 0.75,
                },
                "artifacts": {"report": {"uri": str(root / "evaluation")}},
                "gates": [{"metric": "fusion_test_accuracy", "value": 0.9, "min": 0.85, "max": None, "passed": True}],
            },
            "export_system": {"status": "succeeded", "artifacts": {"exported": {"uri": str(root / "export")}}},
        }
        step_of = {"optical": "train_sensor_optical", "radar": "train_sensor_radar", "fusion": "train_fusion"}
    else:
        models = ["model"]
        evaluation.update(
            {
                "accuracy": 0.9,
                "per_class": per_class,
                "classes": CLASSES,
                "requirements": REQUIREMENTS,
                "confusion_matrix": [[6, 1, 0], [1, 6, 0], [0, 0, 6]],
            }
        )
        steps = {
            "ingest_data": {"status": "succeeded", "artifacts": {"dataset": {"uri": str(root / "dataset")}}},
            "train_model": {"status": "succeeded", "stages": stages, "metrics": {"train_seconds": 3}},
            "evaluate_model": {
                "status": "succeeded",
                "metrics": {"test_accuracy": 0.9},
                "artifacts": {"report": {"uri": str(root / "evaluation")}},
                "gates": [{"metric": "test_accuracy", "value": 0.9, "min": 0.8, "max": None, "passed": True}],
            },
            "export_model": {
                "status": "succeeded",
                "metrics": {"model_fp32_test_accuracy": 0.9},
                "artifacts": {"exported": {"uri": str(root / "export")}},
            },
        }
        step_of = {"model": "train_model"}
    (root / "evaluation" / "evaluation.json").write_text(json.dumps(evaluation))
    (root / "export").mkdir()
    (root / "export" / "export_report.json").write_text(json.dumps(_export_report(models)))
    events = [e for m in models for e in _epochs(m if system else "", step_of[m])]
    (root / "events.jsonl").write_text("".join(json.dumps({k: v for k, v in e.items() if v}) + "\n" for e in events))
    summary = {
        "pipeline": "rooivalk-multisensor" if system else "rooivalk-training",
        "plan": "fixture-plan",
        "status": "succeeded",
        "error": None,
        "dataset_version": "ds-fixture",
        "steps": steps,
        "tracking": {"uri": "", "run_id": None},
        "out_dir": str(root),
        "seconds": 12.0,
    }
    (root / "summary.json").write_text(json.dumps(summary))
    return root
