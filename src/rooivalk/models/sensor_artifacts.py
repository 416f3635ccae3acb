"""The trained sensor models of a multi-sensor system as the pipeline's steps hand them to each other.

Layouts (written through rooivalk.storage, so a local folder or an s3:// prefix; the info file is
written last, so a folder without it is an incomplete write and is refused on load):
    sensor model   model.pt (state dict), sensor.json (SensorModelInfo)
(The fusion model: rooivalk.models.fusion_artifacts; the cached fusion features between them:
rooivalk.features.fusion_features.)

State dicts load with weights_only=True. A model is rebuilt from its spec without pretrained
weights (they are inside the state dict), so loading never needs the weight files of training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from torch import nn

from rooivalk import storage
from rooivalk.data.multisensor_dataset import MultiSensorDataset
from rooivalk.models.artifact import WEIGHTS_FILE, load_state_dict_into, read_info_file, state_dict_bytes
from rooivalk.models.pruning import pruned_structure
from rooivalk.models.registry import create_model
from rooivalk.models.sensor_encoding import SensorEncoding, sensor_encoding
from rooivalk.plan import ModelSpec

SENSOR_INFO = "sensor.json"


@dataclass
class SensorTrainResult:
    """A trained sensor model with its input encoding and how its training went (what a sensor step
    returns and what loading a sensor model folder gives back)."""

    name: str
    model: nn.Module
    encoding: SensorEncoding
    val_accuracy: float
    seconds: float
    stages: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: str | None = None


class SensorModelInfo(BaseModel):
    sensor: str
    spec: ModelSpec
    classes: list[str]
    dataset_version: str
    val_accuracy: float
    seconds: float
    stages: list[dict[str, Any]] = []
    weights_sha256: str | None = None  # checked on load
    structure: dict[str, dict[str, Any]] | None = None  # channel pruning's layer sizes; None: the spec's


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
        structure=pruned_structure(result.model),
    )
    storage.write_text(f"{model_dir}/{SENSOR_INFO}", info.model_dump_json(indent=2))


def read_sensor_info(model_dir: str) -> SensorModelInfo:
    return SensorModelInfo.model_validate_json(read_info_file(model_dir, SENSOR_INFO, "sensor model"))


def load_sensor_model(model_dir: str) -> tuple[SensorTrainResult, SensorModelInfo]:
    info = read_sensor_info(model_dir)
    spec = info.spec.model_copy(update={"pretrained": None})
    model = create_model(spec, len(info.classes))
    load_state_dict_into(model, f"{model_dir}/{WEIGHTS_FILE}", info.weights_sha256, info.structure)
    model.eval()
    result = SensorTrainResult(
        info.sensor, model, sensor_encoding(model, spec), info.val_accuracy, info.seconds, info.stages
    )
    return result, info


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
