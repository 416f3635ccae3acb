"""A multi-sensor plan end to end in one process: data, sensor models, feature cache, fusion.

`train_multisensor` runs what the multi-sensor pipeline's steps do (rooivalk.steps.system_steps),
one after another and in memory (no artifacts between them), for scripts and tests that want the
whole system without KFP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rooivalk.data.ingest_multisensor import MultiSensorIngestResult, ingest_events
from rooivalk.data.multisensor_dataset import MultiSensorDataset, load_multisensor
from rooivalk.events import ProgressFn
from rooivalk.features.fusion_features import cache_sensor_features
from rooivalk.models.fusion_inference import FusionFeatures
from rooivalk.models.fusion_transformer import FusionTransformer
from rooivalk.models.sensor_artifacts import SensorTrainResult
from rooivalk.plan import Plan
from rooivalk.training.engine.fitting import FitResult
from rooivalk.training.fusion_training import train_fusion
from rooivalk.training.sensor_training import train_sensor


@dataclass
class MultiSensorRun:
    dataset: MultiSensorDataset
    ingest: MultiSensorIngestResult
    sensors: dict[str, SensorTrainResult]
    features: FusionFeatures
    fusion: FusionTransformer
    fusion_fit: FitResult
    seconds: dict[str, float] = field(default_factory=dict)


def train_multisensor(
    plan: Plan, out_dir: str, progress: ProgressFn | None = None, cache_root: str | None = None
) -> MultiSensorRun:
    specs, fusion_spec = plan.multisensor_parts()
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    dataset_dir = f"{out_dir}/dataset"
    ingest = ingest_events(plan, dataset_dir, progress=progress)
    dataset = load_multisensor(dataset_dir)
    seconds["ingest_events"] = time.perf_counter() - started

    sensors: dict[str, SensorTrainResult] = {}
    for name in dataset.sensor_names:  # the dataset's order: its presence-mask columns
        sensors[name] = train_sensor(name, specs[name], dataset, progress)
        seconds[f"train_sensor_{name}"] = sensors[name].seconds

    started = time.perf_counter()
    features = cache_sensor_features(
        dataset, sensors, cache_root or fusion_spec.cache_uri or f"{out_dir}/feature-cache"
    )
    seconds["cache_features"] = time.perf_counter() - started

    started = time.perf_counter()
    fusion, fit = train_fusion(features, dataset, fusion_spec, progress)
    seconds["train_fusion"] = time.perf_counter() - started
    return MultiSensorRun(dataset, ingest, sensors, features, fusion, fit, seconds=seconds)
