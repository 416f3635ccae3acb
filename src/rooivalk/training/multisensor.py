"""A multi-sensor plan end to end in one process: data, four sensor models, feature cache, fusion.

`train_multisensor` is what the counter-drone pipeline's steps do one after another (simulate or
read the source, ingest, train each sensor, cache features, train fusion, and, for the evidence,
an ablation without modality dropout), for scripts and tests that want the whole system without
KFP. Each part is a library call of its own (ingest_multisensor, train_sensor,
cache_sensor_features, train_fusion) that pipeline components call separately.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rooivalk import storage
from rooivalk.data.ingest_multisensor import INDEX_FILE, MultiSensorIngestResult, ingest_multisensor
from rooivalk.data.multisensor import MultiSensorDataset, load_multisensor
from rooivalk.models.fusion import FusionTransformer
from rooivalk.plan import FusionSpec, ModalityDropoutSpec, Plan
from rooivalk.training.fusion import FusionFeatures, cache_sensor_features, train_fusion
from rooivalk.training.sensors import SensorTrainResult, train_sensor
from rooivalk.training.tensor_fit import FitResult, Progress


@dataclass
class MultiSensorRun:
    dataset: MultiSensorDataset
    ingest: MultiSensorIngestResult
    sensors: dict[str, SensorTrainResult]
    features: FusionFeatures
    fusion: FusionTransformer
    fusion_fit: FitResult
    ablation: FusionTransformer | None = None  # the same fusion trained without modality dropout
    seconds: dict[str, float] = field(default_factory=dict)


def ensure_source(plan: Plan, progress: Progress) -> None:
    """Simulate the plan's source when the plan asks for it and no event index exists there yet."""
    source = plan.data.source.rstrip("/")
    if plan.data.simulate is None or storage.exists(f"{source}/{INDEX_FILE}"):
        return
    from rooivalk.data.simulators.counter_drone import simulate_counter_drone

    sim = plan.data.simulate
    progress({"event": "message", "text": f"simulating {sim.count} events (seed {sim.seed}) into {source}"})
    simulate_counter_drone(
        source,
        sim.count,
        sim.seed,
        sim.image_size,
        progress=lambda done, total: progress({"event": "batch", "stage": "simulate", "done": done, "total": total}),
    )


def without_modality_dropout(spec: FusionSpec) -> FusionSpec:
    return spec.model_copy(update={"modality_dropout": ModalityDropoutSpec(p=0.0, max_dropped=1)})


def train_multisensor(
    plan: Plan, out_dir: str, progress: Progress | None = None, ablation: bool = True, cache_root: str | None = None
) -> MultiSensorRun:
    report: Progress = progress or (lambda _event: None)
    if plan.sensors is None or plan.fusion is None:
        raise ValueError(f"plan {plan.name!r}: train_multisensor needs 'sensors' and 'fusion'")
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    ensure_source(plan, report)
    seconds["simulate"] = time.perf_counter() - started

    started = time.perf_counter()
    dataset_dir = f"{out_dir}/dataset"
    ingest = ingest_multisensor(plan.data, dataset_dir, list(plan.sensors))
    dataset = load_multisensor(dataset_dir)
    seconds["ingest"] = time.perf_counter() - started

    sensors: dict[str, SensorTrainResult] = {}
    for name, spec in plan.sensors.items():
        report({"event": "message", "text": f"training sensor model {name} ({spec.model.family})"})
        sensors[name] = train_sensor(name, spec, dataset, report)
        seconds[f"train_{name}"] = sensors[name].seconds

    started = time.perf_counter()
    features = cache_sensor_features(
        dataset, sensors, cache_root or plan.fusion.cache_uri or f"{out_dir}/feature-cache"
    )
    seconds["cache_features"] = time.perf_counter() - started

    started = time.perf_counter()
    fusion, fit = train_fusion(features, dataset, plan.fusion, report)
    seconds["train_fusion"] = time.perf_counter() - started
    run = MultiSensorRun(dataset, ingest, sensors, features, fusion, fit, seconds=seconds)
    if ablation:
        started = time.perf_counter()
        run.ablation, _ = train_fusion(features, dataset, without_modality_dropout(plan.fusion), report)
        seconds["train_fusion_no_dropout"] = time.perf_counter() - started
    return run


def run_summary(run: MultiSensorRun) -> dict[str, Any]:
    return {
        "dataset_version": run.dataset.info.version_id,
        "events": run.dataset.info.num_events,
        "split_sizes": run.dataset.info.split_sizes,
        "missing": run.ingest.missing,
        "quarantined": len(run.ingest.quarantined),
        "sensor_val_accuracy": {name: result.val_accuracy for name, result in run.sensors.items()},
        "fusion_val_accuracy": run.fusion_fit.best_val_accuracy,
        "encoder_forward_passes": run.features.forward_passes,
        "cache": run.features.cache,
        "seconds": run.seconds,
    }
