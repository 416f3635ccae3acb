"""The trained-model artifact of a detector: weights plus what its inputs and outputs mean.

Layout of a model directory (as rooivalk.models.artifact, model.json written last):
    model.pt    state dict (loaded with weights_only=True, digest checked)
    model.json  DetectorInfo: the resolved model spec (input size, post-processing), the classes, the
                backbone's normalization and the operating threshold, the dataset version and plan digest
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel
from torch import nn

from rooivalk import storage
from rooivalk.models.artifact import INFO_FILE, WEIGHTS_FILE, load_state_dict_into, read_info_file, save_trained_model
from rooivalk.models.registry import create_model
from rooivalk.plan import DetectorSpec, ModelSpec

DETECTION_KIND = "detection"


class DetectorInfo(BaseModel):
    kind: Literal["detection"] = "detection"
    spec: ModelSpec  # model.detector filled in with its defaults
    classes: list[str]
    input_height: int
    input_width: int
    mean: list[float]  # the backbone's normalization (the model applies it; recorded for export)
    std: list[float]
    operating_threshold: float
    dataset_version: str
    plan_digest: str
    weights_sha256: str | None = None

    @property
    def detector(self) -> DetectorSpec:
        return self.spec.detector or DetectorSpec()


def is_detector_model(model_dir: str) -> bool:
    """Whether `model_dir` holds a detector (its model.json's kind says so)."""
    uri = f"{model_dir}/{INFO_FILE}"
    return storage.exists(uri) and json.loads(storage.read_bytes(uri)).get("kind") == DETECTION_KIND


def save_detector(model_dir: str, model: nn.Module, info: DetectorInfo) -> dict[str, str]:
    """Weights, then model.json carrying their sha256; returns {file: sha256}."""
    return save_trained_model(model_dir, model, info)


def read_detector_info(model_dir: str) -> DetectorInfo:
    return DetectorInfo.model_validate_json(read_info_file(model_dir, INFO_FILE, "rooivalk detector"))


def load_detector(model_dir: str) -> tuple[nn.Module, DetectorInfo]:
    """Rebuild the architecture (no pretrained weights) and load the trained ones, in eval mode."""
    info = read_detector_info(model_dir)
    model = create_model(info.spec.model_copy(update={"pretrained": None}), len(info.classes))
    load_state_dict_into(model, f"{model_dir}/{WEIGHTS_FILE}", info.weights_sha256)
    return model.eval(), info
