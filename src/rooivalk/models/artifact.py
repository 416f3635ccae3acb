"""The trained-model artifact: weights plus everything needed to rebuild and feed the model.

Layout of a model directory:
    model.pt    state dict (loaded with weights_only=True)
    model.json  ModelInfo: spec, classes, input size, normalization, lineage
"""

from __future__ import annotations

import io

import torch
from pydantic import BaseModel
from torch import nn

from rooivalk import storage
from rooivalk.models.registry import create_model
from rooivalk.plan import ModelSpec

WEIGHTS_FILE = "model.pt"
INFO_FILE = "model.json"


class ModelInfo(BaseModel):
    spec: ModelSpec
    classes: list[str]
    input_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset_version: str
    plan_digest: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def save_trained_model(model_dir: str, model: nn.Module, info: ModelInfo) -> dict[str, str]:
    """Write weights and info atomically; returns {file: sha256}."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buffer)
    return {
        WEIGHTS_FILE: storage.write_bytes(f"{model_dir}/{WEIGHTS_FILE}", buffer.getvalue()),
        INFO_FILE: storage.write_text(f"{model_dir}/{INFO_FILE}", info.model_dump_json(indent=2)),
    }


def load_trained_model(model_dir: str) -> tuple[nn.Module, ModelInfo]:
    """Rebuild the architecture (no pretrained download) and load the trained weights, in eval mode."""
    info_uri = f"{model_dir}/{INFO_FILE}"
    if not storage.exists(info_uri):
        raise storage.StorageError(f"{model_dir}: not a rooivalk model (no {INFO_FILE})")
    info = ModelInfo.model_validate_json(storage.read_bytes(info_uri))
    model = create_model(info.spec.model_copy(update={"pretrained": None}), info.num_classes)
    state = torch.load(
        io.BytesIO(storage.read_bytes(f"{model_dir}/{WEIGHTS_FILE}")), map_location="cpu", weights_only=True
    )
    model.load_state_dict(state, strict=True)
    return model.eval(), info
