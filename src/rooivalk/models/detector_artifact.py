"""The trained-model artifact of a detector: weights plus what its inputs and outputs mean.

Layout of a model directory (as rooivalk.models.artifact, model.json written last):
    model.pt    state dict (loaded with weights_only=True, digest checked)
    model.json  DetectorInfo: the resolved model spec (input size, post-processing), the classes, the
                backbone's normalization and the operating threshold, the dataset version and plan digest
    members/k/  with model.detector.ensemble: member k (1..M-1) as a detector of its own (model.pt,
                model.json without an ensemble); the root holds member 0 and is written last
"""

from __future__ import annotations

import json
from typing import Any, Literal

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
    # An ensemble's root: members 1..M-1's weight digests, so a member left by another run is refused.
    member_weights_sha256: list[str] = []
    structure: dict[str, dict[str, Any]] | None = None  # channel pruning's layer sizes (plans refuse pruning detectors)

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
    load_state_dict_into(model, f"{model_dir}/{WEIGHTS_FILE}", info.weights_sha256, info.structure)
    return model.eval(), info


def member_path(member: int) -> str:
    """Where ensemble member `member` (>= 1) lives under a model directory."""
    return f"members/{member}"


def load_detector_members(model_dir: str) -> tuple[list[nn.Module], DetectorInfo]:
    """Every member of the detector in `model_dir` (one without model.detector.ensemble), member 0 first,
    and the root's info (its ensemble settings). A member whose weights are not those the root recorded
    is a ValueError naming it."""
    model, info = load_detector(model_dir)
    models = [model]
    ensemble = info.detector.ensemble
    for member in range(1, 1 if ensemble is None else ensemble.members):
        folder = f"{model_dir}/{member_path(member)}"
        member_model, member_info = load_detector(folder)
        expected = info.member_weights_sha256[member - 1] if member <= len(info.member_weights_sha256) else None
        if member_info.weights_sha256 != expected:
            raise ValueError(
                f"{folder}: ensemble member {member}'s weights are not the ones {model_dir}/{INFO_FILE} was "
                "trained with (a member of another run): train the ensemble again"
            )
        models.append(member_model)
    return models, info
