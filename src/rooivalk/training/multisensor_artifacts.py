"""What the counter-drone pipeline's steps hand each other: sensor models, fusion features, the fusion model.

Layouts (written through rooivalk.storage, so a local folder or an s3:// prefix; the info file is
written last, so a folder without it is an incomplete write and is refused on load):
    sensor model   model.pt (state dict), sensor.json (SensorModelInfo)
    features       <sensor>.npy float32 (N, D_s) over all events (zeros where absent), present.npy
                   bool (N, S), features.json (FusionFeaturesInfo: dataset version, content key, cache counters)
    fusion model   model.pt, fusion.json (FusionModelInfo)

State dicts load with weights_only=True. A model is rebuilt from its spec without pretrained
weights (they are inside the state dict), so loading never needs the weight files of training.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from pydantic import BaseModel

from rooivalk import storage
from rooivalk.data.dataset import load_npy, npy_bytes
from rooivalk.features.sensors import sensor_encoding
from rooivalk.models import create_model
from rooivalk.models.artifact import load_state_dict_into, read_info_file, state_dict_bytes
from rooivalk.models.fusion import FusionTransformer
from rooivalk.plan import FusionSpec, ModelSpec
from rooivalk.training.fusion import FusionFeatures, build_fusion, embedding_dims
from rooivalk.training.sensors import SensorTrainResult

WEIGHTS_FILE = "model.pt"
SENSOR_INFO = "sensor.json"
FEATURES_INFO = "features.json"
FUSION_INFO = "fusion.json"
PRESENT_FILE = "present.npy"


class SensorModelInfo(BaseModel):
    sensor: str
    spec: ModelSpec
    classes: list[str]
    dataset_version: str
    val_accuracy: float
    seconds: float
    stages: list[dict[str, Any]] = []
    weights_sha256: str | None = None  # checked on load


class FusionFeaturesInfo(BaseModel):
    dataset_version: str
    sensors: list[str]
    dims: dict[str, int]
    key: str  # sha256 over every (sensor, split) feature-cache key: equal keys, equal features
    cache: dict[str, dict[str, Any]]  # sensor -> hits, misses, forward passes, keys
    files: dict[str, str] = {}  # .npy file -> sha256, checked on load


class FusionModelInfo(BaseModel):
    spec: FusionSpec
    dims: dict[str, int]
    classes: list[str]
    dataset_version: str
    features_key: str
    val_accuracy: float
    weights_sha256: str | None = None  # checked on load


def save_sensor_model(
    model_dir: str, result: SensorTrainResult, spec: ModelSpec, classes: list[str], dataset_version: str
) -> None:
    digest = storage.write_bytes(f"{model_dir}/{WEIGHTS_FILE}", state_dict_bytes(result.model))
    info = SensorModelInfo(
        weights_sha256=digest,
        sensor=result.name,
        spec=spec,
        classes=classes,
        dataset_version=dataset_version,
        val_accuracy=result.val_accuracy,
        seconds=result.seconds,
        stages=result.stages,
    )
    storage.write_text(f"{model_dir}/{SENSOR_INFO}", info.model_dump_json(indent=2))


def read_sensor_info(model_dir: str) -> SensorModelInfo:
    return SensorModelInfo.model_validate_json(read_info_file(model_dir, SENSOR_INFO, "sensor model"))


def load_sensor_model(model_dir: str) -> tuple[SensorTrainResult, SensorModelInfo]:
    info = read_sensor_info(model_dir)
    spec = info.spec.model_copy(update={"pretrained": None})
    model = create_model(spec, len(info.classes))
    load_state_dict_into(model, f"{model_dir}/{WEIGHTS_FILE}", info.weights_sha256)
    model.eval()
    result = SensorTrainResult(
        info.sensor, model, sensor_encoding(model, spec), info.val_accuracy, info.seconds, info.stages
    )
    return result, info


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


def save_fusion_model(model_dir: str, model: FusionTransformer, info: FusionModelInfo) -> None:
    info.weights_sha256 = storage.write_bytes(f"{model_dir}/{WEIGHTS_FILE}", state_dict_bytes(model))
    storage.write_text(f"{model_dir}/{FUSION_INFO}", info.model_dump_json(indent=2))


def load_fusion_model(model_dir: str) -> tuple[FusionTransformer, FusionModelInfo]:
    info = FusionModelInfo.model_validate_json(read_info_file(model_dir, FUSION_INFO, "fusion model"))
    model = build_fusion(info.dims, len(info.classes), info.spec)
    load_state_dict_into(model, f"{model_dir}/{WEIGHTS_FILE}", info.weights_sha256)
    return model.eval(), info
