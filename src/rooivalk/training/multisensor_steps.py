"""The counter-drone pipeline's steps as library calls: one function per KFP component.

Each reads the artifacts of the steps before it from folders (or s3:// prefixes) and writes its own
(rooivalk.training.multisensor_artifacts), so the steps run as separate processes or pods:

    ingest_events      simulate the source if the plan asks and it is absent, then ingest   -> dataset
    train_sensor_step  one sensor's model (four run in parallel)                           -> sensor model
    cache_features     frozen encoders over every event, through the content-addressed cache -> features
    train_fusion_step  fusion transformer with modality dropout on the cached features       -> fusion model
    (evaluation: rooivalk.evaluation.multisensor_report.evaluate_fusion_step;
     export: rooivalk.export.system.export_system_step; registration: rooivalk.tracking.register)
"""

from __future__ import annotations

from dataclasses import dataclass

from rooivalk import storage
from rooivalk.data.ingest_multisensor import INDEX_FILE, MultiSensorIngestResult, ingest_multisensor
from rooivalk.data.multisensor import MultiSensorDataset, load_multisensor
from rooivalk.plan import FusionSpec, Plan, SensorSpec
from rooivalk.training.fitting import FitResult
from rooivalk.training.fusion import FusionFeatures, cache_sensor_features, train_fusion
from rooivalk.training.loop import MetricsFn
from rooivalk.training.loop import ProgressFn as Progress
from rooivalk.training.multisensor_artifacts import (
    FusionFeaturesInfo,
    FusionModelInfo,
    load_fusion_features,
    load_sensor_model,
    save_fusion_features,
    save_fusion_model,
    save_sensor_model,
)
from rooivalk.training.sensors import SensorTrainResult, train_sensor


def multisensor_parts(plan: Plan) -> tuple[dict[str, SensorSpec], FusionSpec]:
    if plan.sensors is None or plan.fusion is None:
        raise ValueError(f"plan {plan.name!r} is not a multi-sensor plan: it needs 'sensors' and 'fusion'")
    return plan.sensors, plan.fusion


def ensure_source(plan: Plan, progress: Progress | None = None) -> None:
    """Simulate the plan's source when the plan asks for it and no event index exists there yet, or
    when the events there were simulated with other settings (then they are simulated again, so a
    changed plan never trains on stale data)."""
    source = plan.data.source.rstrip("/")
    if plan.data.simulate is None:
        return
    from rooivalk.data.simulators.counter_drone import changed_settings, simulate_counter_drone, simulation_settings

    report = progress or (lambda _event: None)
    sim = plan.data.simulate
    if storage.exists(f"{source}/{INDEX_FILE}"):
        wanted = simulation_settings(sim.count, sim.seed, sim.image_size, sim.optical_field_px)
        changed = changed_settings(source, wanted)
        if not changed:
            return
        text = f"{source}: simulated with other settings ({', '.join(changed)}); simulating again"
        report({"event": "message", "text": text})

    report({"event": "message", "text": f"simulating {sim.count} events (seed {sim.seed}) into {source}"})
    simulate_counter_drone(
        source,
        sim.count,
        sim.seed,
        sim.image_size,
        progress=lambda done, total: report({"event": "batch", "stage": "simulate", "done": done, "total": total}),
        optical_field_px=sim.optical_field_px,
    )


def ingest_events(
    plan: Plan, dataset_dir: str, quarantine_uri: str | None = None, progress: Progress | None = None
) -> MultiSensorIngestResult:
    sensors, _ = multisensor_parts(plan)
    ensure_source(plan, progress)
    # Sorted: the plan's key order does not survive KFP's parameter transport, and the dataset's
    # sensor order (its presence-mask columns, the fusion tokens) should not change between runs.
    return ingest_multisensor(plan.data, dataset_dir, sorted(sensors), quarantine_uri)


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
    progress: Progress | None = None,
    log_metrics: MetricsFn | None = None,
) -> SensorTrainResult:
    sensors, _ = multisensor_parts(plan)
    if sensor not in sensors:
        raise KeyError(f"plan {plan.name!r} has no sensor {sensor!r}; its sensors: {list(sensors)}")
    dataset = load_multisensor(dataset_dir)
    result = train_sensor(
        sensor, sensors[sensor], dataset, progress, step_checkpoint_uri(model_dir), log_metrics=log_metrics
    )
    save_sensor_model(model_dir, result, sensors[sensor].model, dataset.info.classes, dataset.info.version_id)
    return result


def load_sensor_models(
    model_dirs: list[str], dataset: MultiSensorDataset, same_version: bool = True
) -> dict[str, SensorTrainResult]:
    """The sensor models in the dataset's sensor order (the order of its presence-mask columns,
    which the fusion model's tokens follow), checked against the dataset they must have trained on
    (`same_version=False` to score older models on new data, as champion re-scoring does)."""
    loaded: dict[str, SensorTrainResult] = {}
    for model_dir in model_dirs:
        result, info = load_sensor_model(model_dir)
        if same_version and info.dataset_version != dataset.info.version_id:
            raise ValueError(
                f"{model_dir}: sensor model {info.sensor!r} was trained on dataset {info.dataset_version}, "
                f"not {dataset.info.version_id}"
            )
        if info.sensor in loaded:
            raise ValueError(f"{model_dir}: a second model for sensor {info.sensor!r}")
        loaded[info.sensor] = result
    if sorted(loaded) != sorted(dataset.sensor_names):
        raise ValueError(f"sensor models for {sorted(loaded)}, but the dataset has sensors {dataset.sensor_names}")
    return {name: loaded[name] for name in dataset.sensor_names}


def cache_features(
    plan: Plan, dataset_dir: str, model_dirs: list[str], features_dir: str
) -> tuple[FusionFeatures, FusionFeaturesInfo]:
    """Embeddings of every event by every frozen sensor encoder, read from (or added to) the cache at
    the plan's fusion.cache_uri; unchanged encoders, preprocessing and data cost zero forward passes.
    Without a cache_uri the cache lives beside the features and serves this run only (a cluster plan
    names an s3:// prefix so that runs share it)."""
    _, fusion = multisensor_parts(plan)
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
    progress: Progress | None = None,
    log_metrics: MetricsFn | None = None,
) -> FusionStepResult:
    """Fusion on the cached embeddings; `expected_features_key` (what cache_features returned, the
    parameter KFP keys this task's cache on) must be the key of the features found at `features_dir`."""
    _, fusion = multisensor_parts(plan)
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
