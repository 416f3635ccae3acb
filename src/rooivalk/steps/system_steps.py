"""The counter-drone pipeline's steps as library calls: one function per KFP component.

Each reads the artifacts of the steps before it from folders (or s3:// prefixes) and writes its own
(rooivalk.models.sensor_artifacts, rooivalk.features.fusion_features), so the steps run as separate
processes or pods:

    (ingest: rooivalk.data.ingest_multisensor.ingest_events                                     -> dataset)
    train_sensor_step  one sensor's model (four run in parallel)                           -> sensor model
    cache_features     frozen encoders over every event, through the content-addressed cache -> features
    train_fusion_step  fusion transformer with modality dropout on the cached features       -> fusion model
    (evaluation: rooivalk.evaluation.multisensor_report.evaluate_fusion_step;
     export: rooivalk.export.system.export_system_step; registration: rooivalk.steps.registration.register)
"""

from __future__ import annotations

from dataclasses import dataclass

from rooivalk.data.multisensor_dataset import load_multisensor
from rooivalk.events import MetricsFn, ProgressFn
from rooivalk.features.fusion_features import (
    FusionFeaturesInfo,
    cache_sensor_features,
    load_fusion_features,
    save_fusion_features,
)
from rooivalk.models.fusion_artifacts import FusionModelInfo, save_fusion_model
from rooivalk.models.fusion_inference import FusionFeatures
from rooivalk.models.sensor_artifacts import SensorTrainResult, load_sensor_models, save_sensor_model
from rooivalk.plan import Plan
from rooivalk.training.engine.fitting import FitResult
from rooivalk.training.fusion_training import train_fusion
from rooivalk.training.sensor_training import train_sensor


def step_checkpoint_uri(model_dir: str) -> str:
    """Where a training step checkpoints unless its training.checkpoint.uri says otherwise: under its
    own output, which a retried pod of the same run (and a rerun of `rooivalk run` with the same
    --out, which sets the URI explicitly) finds again."""
    return f"{model_dir.rstrip('/')}/checkpoints"


def train_sensor_step(
    plan: Plan,
    sensor: str,
    dataset_dir: str,
    model_dir: str,
    progress: ProgressFn | None = None,
    log_metrics: MetricsFn | None = None,
) -> SensorTrainResult:
    sensors, _ = plan.multisensor_parts()
    if sensor not in sensors:
        raise KeyError(f"plan {plan.name!r} has no sensor {sensor!r}; its sensors: {list(sensors)}")
    dataset = load_multisensor(dataset_dir)
    result = train_sensor(
        sensor, sensors[sensor], dataset, progress, step_checkpoint_uri(model_dir), log_metrics=log_metrics
    )
    save_sensor_model(model_dir, result, sensors[sensor].model, dataset.info.classes, dataset.info.version_id)
    return result


def cache_features(
    plan: Plan, dataset_dir: str, model_dirs: list[str], features_dir: str
) -> tuple[FusionFeatures, FusionFeaturesInfo]:
    """Embeddings of every event by every frozen sensor encoder, read from (or added to) the cache at
    the plan's fusion.cache_uri; unchanged encoders, preprocessing and data cost zero forward passes.
    Without a cache_uri the cache lives beside the features and serves this run only (a cluster plan
    names an s3:// prefix so that runs share it)."""
    _, fusion = plan.multisensor_parts()
    dataset = load_multisensor(dataset_dir)
    sensors = load_sensor_models(model_dirs, dataset)
    features = cache_sensor_features(dataset, sensors, fusion.cache_uri or f"{features_dir}/.cache")
    return features, save_fusion_features(features_dir, features, dataset.info.version_id)


@dataclass
class FusionStepResult:
    info: FusionModelInfo
    fit: FitResult


def train_fusion_step(
    plan: Plan,
    dataset_dir: str,
    features_dir: str,
    model_dir: str,
    expected_features_key: str | None = None,
    progress: ProgressFn | None = None,
    log_metrics: MetricsFn | None = None,
) -> FusionStepResult:
    """Fusion on the cached embeddings; `expected_features_key` (what cache_features returned, the
    parameter KFP keys this task's cache on) must be the key of the features found at `features_dir`."""
    _, fusion = plan.multisensor_parts()
    dataset = load_multisensor(dataset_dir)
    features, features_info = load_fusion_features(features_dir)
    if features_info.dataset_version != dataset.info.version_id:
        raise ValueError(
            f"{features_dir}: features of dataset {features_info.dataset_version}, not {dataset.info.version_id}"
        )
    if expected_features_key is not None and features_info.key != expected_features_key:
        raise ValueError(f"{features_dir}: features have key {features_info.key}, not {expected_features_key}")
    model, fit = train_fusion(features, dataset, fusion, progress, step_checkpoint_uri(model_dir), log_metrics)
    info = FusionModelInfo(
        spec=fusion,
        dims=features_info.dims,
        classes=dataset.info.classes,
        dataset_version=dataset.info.version_id,
        features_key=features_info.key,
        val_accuracy=fit.best_val_accuracy,
    )
    save_fusion_model(model_dir, model, info)
    return FusionStepResult(info, fit)
