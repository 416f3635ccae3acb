"""A trained counter-drone system to measure: read from what `make demo` (the KFP pipeline) produced,
or trained in this process; benchmarks/counter_drone.py and benchmarks/export.py start from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rooivalk.data.multisensor_dataset import MultiSensorDataset, load_multisensor
from rooivalk.features.fusion_features import load_fusion_features
from rooivalk.models.fusion_artifacts import load_fusion_model
from rooivalk.models.fusion_inference import FusionFeatures
from rooivalk.models.fusion_transformer import FusionTransformer
from rooivalk.models.sensor_artifacts import SensorTrainResult, load_sensor_models
from rooivalk.plan import Plan
from rooivalk.training.system_training import train_multisensor

# (dataset, sensor models, cached features, fusion model, where they came from)
System = tuple[MultiSensorDataset, dict[str, SensorTrainResult], FusionFeatures, FusionTransformer, dict[str, Any]]


def print_progress(event: dict[str, Any]) -> None:
    """Training progress on stdout: each epoch's validation accuracy and the engine's messages."""
    if event.get("event") == "epoch_end":
        print(f"  {event.get('model', '')} {event['stage']} {event['epoch']}/{event['epochs']}: "
              f"val {float(event['val_accuracy']):.4f}", flush=True)  # fmt: skip
    elif event.get("event") == "message":
        print(f"- {event['text']}", flush=True)


def from_run(run_dir: Path) -> System:
    """The system a `rooivalk run` of the plan produced (its summary.json names the artifacts)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    if summary["status"] != "succeeded":
        raise SystemExit(f"{run_dir}/summary.json: the run {summary['status']}: {summary.get('error')}")
    steps = summary["steps"]
    dataset = load_multisensor(steps["ingest_events"]["artifacts"]["dataset"]["uri"])
    model_dirs = [
        record["artifacts"]["model"]["uri"] for name, record in steps.items() if name.startswith("train_sensor_")
    ]
    features, _ = load_fusion_features(steps["cache_features"]["artifacts"]["features"]["uri"])
    fusion, _ = load_fusion_model(steps["train_fusion"]["artifacts"]["model"]["uri"])
    seconds = {name: float(record["seconds"]) for name, record in steps.items()}
    info = {
        "source": str(run_dir),
        "dataset_dir": steps["ingest_events"]["artifacts"]["dataset"]["uri"],
        "export_dir": steps["export_system"]["artifacts"]["exported"]["uri"],
        "seconds": seconds,
        "run_seconds": summary.get("seconds"),
    }
    return dataset, load_sensor_models(model_dirs, dataset), features, fusion, info


def export_report(origin: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's export_system report of a `from_run` system."""
    from rooivalk import storage
    from rooivalk.export.shipping import REPORT_FILE

    return json.loads(storage.read_bytes(f"{origin['export_dir']}/{REPORT_FILE}"))


def in_process(plan: Plan, work: Path) -> System:
    """The plan's whole system trained here (train_multisensor), its dataset and cache under `work`."""
    run = train_multisensor(plan, str(work), print_progress)
    origin = {"source": "in-process", "seconds": run.seconds, "dataset_dir": f"{work}/dataset"}
    return run.dataset, run.sensors, run.features, run.fusion, origin
