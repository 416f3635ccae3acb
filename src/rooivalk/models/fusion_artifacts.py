"""The trained fusion model as the pipeline's steps hand it on: model.pt (state dict) and fusion.json
(FusionModelInfo: its spec, embedding sizes, classes, dataset version and the features key), the info
file written last (a folder without it is an incomplete write and is refused on load). The model is
rebuilt from its spec and loads its state dict with weights_only=True."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from rooivalk import storage
from rooivalk.models.artifact import WEIGHTS_FILE, load_state_dict_into, read_info_file, state_dict_bytes
from rooivalk.models.fusion_inference import build_fusion
from rooivalk.models.fusion_transformer import FusionTransformer
from rooivalk.models.pruning import pruned_structure
from rooivalk.plan import FusionSpec

FUSION_INFO = "fusion.json"


class FusionModelInfo(BaseModel):
    spec: FusionSpec
    dims: dict[str, int]
    classes: list[str]
    dataset_version: str
    features_key: str
    val_accuracy: float
    weights_sha256: str | None = None  # checked on load
    structure: dict[str, dict[str, Any]] | None = None  # channel pruning's layer sizes; None: the spec's


def save_fusion_model(model_dir: str, model: FusionTransformer, info: FusionModelInfo) -> None:
    info.structure = pruned_structure(model)
    info.weights_sha256 = storage.write_bytes(f"{model_dir}/{WEIGHTS_FILE}", state_dict_bytes(model))
    storage.write_text(f"{model_dir}/{FUSION_INFO}", info.model_dump_json(indent=2))


def load_fusion_model(model_dir: str) -> tuple[FusionTransformer, FusionModelInfo]:
    info = FusionModelInfo.model_validate_json(read_info_file(model_dir, FUSION_INFO, "fusion model"))
    model = build_fusion(info.dims, len(info.classes), info.spec)
    load_state_dict_into(model, f"{model_dir}/{WEIGHTS_FILE}", info.weights_sha256, info.structure)
    return model.eval(), info
