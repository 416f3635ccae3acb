"""Fusion features: every sensor encoder's embeddings over all events, from the content-addressed
feature cache, and the feature set the cache-features step hands to fusion training.

Layout of a feature set (through rooivalk.storage; features.json written last):
    <sensor>.npy float32 (N, D_s) over all events (zeros where absent), present.npy bool (N, S),
    features.json (FusionFeaturesInfo: dataset version, content key, cache counters)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from pydantic import BaseModel

from rooivalk import storage
from rooivalk.data.dataset import SPLIT_CODES, load_npy, npy_bytes
from rooivalk.data.multisensor_dataset import MultiSensorDataset
from rooivalk.features.cache import cached_features, encoder_digest
from rooivalk.models.artifact import read_info_file
from rooivalk.models.fusion_inference import FusionFeatures, embedding_dims
from rooivalk.models.sensor_artifacts import SensorTrainResult

FEATURES_INFO = "features.json"
PRESENT_FILE = "present.npy"


class FusionFeaturesInfo(BaseModel):
    dataset_version: str
    sensors: list[str]
    dims: dict[str, int]
    key: str  # sha256 over every (sensor, split) feature-cache key: equal keys, equal features
    cache: dict[str, dict[str, Any]]  # sensor -> hits, misses, forward passes, keys
    files: dict[str, str] = {}  # .npy file -> sha256, checked on load


def cache_sensor_features(
    dataset: MultiSensorDataset, sensors: dict[str, SensorTrainResult], cache_root: str, batch_size: int = 256
) -> FusionFeatures:
    features: dict[str, np.ndarray] = {}
    cache: dict[str, dict[str, Any]] = {}
    for name, result in sensors.items():
        digest = encoder_digest(result.model, result.encoding.head_prefix)
        matrix: np.ndarray | None = None
        stats: dict[str, Any] = {"hits": 0, "misses": 0, "forward_passes": 0, "keys": {}, "rebuilt": []}
        present = dataset.present_of(name)
        for split, code in SPLIT_CODES.items():
            rows = present & (dataset.splits == code)
            entry = cached_features(
                cache_root,
                name,
                result.model,
                dataset.arrays[name][rows],
                {**result.encoding.preprocessing, "sensor": name},
                dataset.info.version_id,
                split,
                batch_size,
                result.encoding.embed,
                digest,
                result.encoding.preprocess,
            )
            stats["hits" if entry.hit else "misses"] += 1
            stats["forward_passes"] += entry.forward_passes
            stats["keys"][split] = entry.key
            if entry.rebuilt_reason:
                stats["rebuilt"].append(entry.rebuilt_reason)
            if not len(entry.features):
                continue  # no event of this split has the sensor
            if matrix is None:
                matrix = np.zeros((len(dataset.labels), entry.features.shape[1]), dtype=np.float32)
            matrix[rows] = entry.features
        if matrix is None:
            raise ValueError(f"sensor {name!r}: no event in any split has its sample")
        features[name] = matrix
        cache[name] = stats
    return FusionFeatures(features, dataset.present.copy(), cache)


def features_key(cache: dict[str, dict[str, Any]]) -> str:
    keys = {sensor: stats["keys"] for sensor, stats in sorted(cache.items())}
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()


def save_fusion_features(folder: str, features: FusionFeatures, dataset_version: str) -> FusionFeaturesInfo:
    files = {
        f"{name}.npy": storage.write_bytes(f"{folder}/{name}.npy", npy_bytes(matrix.astype(np.float32)))
        for name, matrix in features.features.items()
    }
    files[PRESENT_FILE] = storage.write_bytes(f"{folder}/{PRESENT_FILE}", npy_bytes(features.present.astype(bool)))
    info = FusionFeaturesInfo(
        files=files,
        dataset_version=dataset_version,
        sensors=list(features.features),
        dims=embedding_dims(features),
        key=features_key(features.cache),
        cache=features.cache,
    )
    storage.write_text(f"{folder}/{FEATURES_INFO}", info.model_dump_json(indent=2))
    return info


def load_fusion_features(folder: str) -> tuple[FusionFeatures, FusionFeaturesInfo]:
    info = FusionFeaturesInfo.model_validate_json(read_info_file(folder, FEATURES_INFO, "fusion feature set"))
    matrices = {name: load_npy(f"{folder}/{name}.npy", info.files.get(f"{name}.npy")) for name in info.sensors}
    present = load_npy(f"{folder}/{PRESENT_FILE}", info.files.get(PRESENT_FILE))
    return FusionFeatures(matrices, present, info.cache), info
