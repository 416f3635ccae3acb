"""Realistic registered model versions on a real MLflow store, made in seconds: a pipeline run whose step
runs carry the figures (and the ingest run its dataset version tag and card) as the real steps log them,
then rooivalk.tracking.registry.register_candidate. Shared by the lifecycle and traceability tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from rooivalk.data.dataset_card_schema import DatasetCard
from rooivalk.plan import Plan
from rooivalk.tracking.promotion import DATASET_TAG
from rooivalk.tracking.registry import register_candidate
from rooivalk.tracking.runs import create_pipeline_run, log_artifact, log_metrics, open_step_run, set_tags

RECALL = {"id": "REQ-REC", "text": "drones are found", "metric": "test_recall", "class_name": "drone", "min": 0.9}
LATENCY = {"id": "REQ-LAT", "text": "fast", "metric": "model_fp32_latency_p95_ms", "max": 20.0}


def lifecycle_plan(
    tracking_uri: str, *, recall_min: float = 0.9, require_approval: bool = False, reference_uri: str | None = None
) -> Plan:
    return Plan.model_validate(
        {
            "name": "lifecycle",
            "description": "a tiny classifier",
            "data": {"source": "unused", "format": "image_folder"},
            "model": {"architecture": "test_efficientnet", "input_size": 32},
            "requirements": [{**RECALL, "min": recall_min}, LATENCY],
            "tracking": {"uri": tracking_uri, "promotion": {"require_approval": require_approval}},
            "monitoring": {"reference_uri": reference_uri},
        }
    )


def dataset_card(dataset_version: str, source: str) -> DatasetCard:
    """The card an ingestion of 60/20/20 images of two classes from `source` writes."""
    splits = {"train": (40, 20), "val": (12, 8), "test": (10, 10)}
    per_split = {s: {"total": a + b, "per_class": {"drone": a, "bird": b}} for s, (a, b) in splits.items()}
    return DatasetCard.model_validate(
        {
            "dataset_version": dataset_version,
            "kind": "image",
            "format": "image_folder",
            "classes": ["bird", "drone"],
            "split_seed": 0,
            "sources": {
                "sources": [{"name": source, "uri": source, "reader": "image_folder"}],
                "simulated": None,
                "class_map": {},
                "images_per_source": {},
            },
            "counts": {"unit": "images", "total": 100, "per_split": per_split, "per_class": {"drone": 62, "bird": 38}},
            "quarantine": {"count": 1, "file": "quarantine.json", "by_reason": {"unreadable": 1}},
            "manifest": {
                "info_file": "dataset.json",
                "info_sha256": "0" * 64,
                "files": {},
                "digest": "d" * 64,
                "index_file": "samples.csv",
                "index_sha256": "1" * 64,
                "split_digests": {},
            },
            "created": {"by": "tester", "at": "2026-12-06T18:00:00Z", "rooivalk_version": "0.1.0", "git_commit": "abc"},
        }
    )


def register_version(
    tmp_path: Path,
    plan: Plan,
    accuracy: float,
    tag: str,
    *,
    dataset_version: str = "ds-1",
    recall: float = 0.95,
    rescore: Callable[[str], float] | None = None,
    parent: str | None = None,
) -> tuple[str, str]:
    """A pipeline run (or more steps of `parent`'s) with the steps' figures as the real steps log them, then
    registration; (name, version)."""
    uri = plan.tracking.uri
    assert uri is not None
    parent = parent or create_pipeline_run(uri, plan.model_dump(mode="json"), f"key-{tag}", "rooivalk-training")
    figures = {
        "ingest_data": {"train_size": 60.0, "val_size": 20.0, "test_size": 20.0, "num_quarantined": 1.0},
        "train_model": {"stage_head_epochs": 2.0, "stage_all_epochs": 3.0, "best_epoch": 4.0, "train_seconds": 9.5},
        "evaluate_model": {"test_accuracy": accuracy, "test_recall.drone": recall},
        "export_model": {"model_fp32_latency_p95_ms": 3.2},
    }
    for step, metrics in figures.items():
        run_id = open_step_run(uri, parent, step)
        log_metrics(uri, run_id, metrics)
        if step == "ingest_data":  # as rooivalk.steps.ingest_step.record_ingest does
            set_tags(uri, run_id, {DATASET_TAG: dataset_version})
            card = tmp_path / f"card-{tag}" / "dataset_card.json"
            card.parent.mkdir()
            card.write_text(dataset_card(dataset_version, f"s3://data/{dataset_version}").model_dump_json(indent=2))
            log_artifact(uri, run_id, str(card))
    run_id = open_step_run(uri, parent, "register_model")
    set_tags(uri, run_id, {"note": "registration"})
    evaluation = tmp_path / f"evaluation-{tag}"
    evaluation.mkdir()
    (evaluation / "evaluation.json").write_text(json.dumps({"accuracy": accuracy}))
    (evaluation / "reference").mkdir()
    (evaluation / "reference" / "profile.json").write_text(json.dumps({"registered": tag}))  # the drift reference
    export = tmp_path / f"export-{tag}" / "variants" / "model"
    export.mkdir(parents=True)
    network = torch.nn.Linear(4, 3)
    torch.onnx.export(
        network, (torch.zeros(1, 4),), str(export / "model_fp32.onnx"), input_names=["inputs"],
        output_names=["logits"], dynamic_axes={"inputs": {0: "batch"}}, dynamo=False,
    )  # fmt: skip
    artifacts = {"evaluation": str(evaluation), "onnx": str(tmp_path / f"export-{tag}")}
    registration = register_candidate(uri, plan, run_id, parent, network, dataset_version, artifacts, rescore=rescore)
    return registration.name, registration.version
