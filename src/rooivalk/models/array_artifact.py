"""The trained-model artifact of an rnn or mlp model: weights plus what turns raw data into its inputs.

Layout of a model directory (as rooivalk.models.artifact, model.json written last):
    model.pt    state dict (loaded with weights_only=True, digest checked)
    model.json  ArrayModelInfo: the resolved model spec, classes, and the dataset's encoding: for
                sequences the feature names, stored length and standardization; for tables the whole
                table dataset info (numeric and categorical features with their train categories and
                standardization), so that export and the Predictor encode raw rows exactly as training did
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel
from torch import nn

from rooivalk import storage
from rooivalk.models.artifact import INFO_FILE, WEIGHTS_FILE, load_state_dict_into, read_info_file, save_trained_model
from rooivalk.models.artifact import VARIANTS_DIR as VARIANTS_DIR
from rooivalk.models.artifact import VariantMemberInfo as VariantMemberInfo
from rooivalk.models.artifact import variant_member_path as variant_member_path
from rooivalk.models.registry import create_model
from rooivalk.models.variant_ensemble import VariantEnsemble
from rooivalk.plan import ModelSpec

XGBOOST_FILE = "xgboost.ubj"  # the ensemble's XGBoost member (xgboost's UBJSON model format)


class EnsembleInfo(BaseModel):
    """A table model's ensemble with an XGBoost model (rooivalk.plan.ensemble)."""

    weights: dict[str, float]  # member ("model", "xgboost") -> weight, summing to 1
    fitted: bool  # fitted on the validation split, or as the plan gave them
    xgboost_sha256: str


class ArrayModelInfo(BaseModel):
    kind: Literal["sequences", "table"]
    spec: ModelSpec  # num_features resolved from the dataset
    classes: list[str]
    input_names: list[str]  # the model's input columns: sequence features, or table model inputs
    length: int | None = None  # sequences: frames per stored sequence
    mean: list[float] = []  # sequences: per-feature standardization of the train split
    std: list[float] = []
    table: dict[str, Any] | None = None  # table: TableDatasetInfo as JSON (rooivalk.data.table_dataset)
    ensemble: EnsembleInfo | None = None  # with an XGBoost member at XGBOOST_FILE
    variants: list[VariantMemberInfo] | None = None  # a variant ensemble: its members under members/<k>
    dataset_version: str
    plan_digest: str
    weights_sha256: str | None = None
    structure: dict[str, dict[str, Any]] | None = None  # channel pruning's layer sizes; None: the spec's

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def is_array_model(model_dir: str) -> bool:
    """Whether `model_dir` holds an rnn or mlp model (its model.json has a data kind; an image model's has none)."""
    uri = f"{model_dir}/{INFO_FILE}"
    return storage.exists(uri) and json.loads(storage.read_bytes(uri)).get("kind") in ("sequences", "table")


def model_classes(model_dir: str) -> list[str]:
    """The class names in a single model's model.json, image or array model alike."""
    classes: list[str] = json.loads(read_info_file(model_dir, INFO_FILE, "rooivalk model"))["classes"]
    return classes


def load_any_model(model_dir: str) -> nn.Module:
    """The trained network of a single-model plan, image, array model or detector, in eval mode."""
    if is_array_model(model_dir):
        return load_array_model(model_dir)[0]
    from rooivalk.models.detector_artifact import is_detector_model, load_detector

    if is_detector_model(model_dir):
        return load_detector(model_dir)[0]
    from rooivalk.models.artifact import load_trained_model

    return load_trained_model(model_dir)[0]


def save_array_model(model_dir: str, model: nn.Module, info: ArrayModelInfo) -> dict[str, str]:
    """Weights, then model.json carrying their sha256; returns {file: sha256}."""
    return save_trained_model(model_dir, model, info)


def read_array_model_info(model_dir: str) -> ArrayModelInfo:
    return ArrayModelInfo.model_validate_json(read_info_file(model_dir, INFO_FILE, "rooivalk model"))


def load_xgboost_member(model_dir: str, info: ArrayModelInfo) -> Any:
    """The ensemble's XGBoost Booster, its digest checked (imported here: xgboost loads only for ensembles)."""
    import xgboost as xgb

    if info.ensemble is None:
        raise ValueError(f"{model_dir}: the model has no ensemble")
    booster = xgb.Booster()
    booster.load_model(
        bytearray(storage.read_bytes(f"{model_dir}/{XGBOOST_FILE}", sha256=info.ensemble.xgboost_sha256))
    )
    return booster


def load_array_model(model_dir: str) -> tuple[nn.Module, ArrayModelInfo]:
    """Rebuild the architecture (no pretrained weights) and load the trained ones, in eval mode; a variant
    ensemble as one VariantEnsemble network of its members."""
    info = read_array_model_info(model_dir)
    if info.variants is not None:
        members = [model for model, _ in load_variant_members(model_dir, info)]
        return VariantEnsemble(members, [member.weight for member in info.variants]).eval(), info
    model = create_model(info.spec.model_copy(update={"pretrained": None}), info.num_classes)
    load_state_dict_into(model, f"{model_dir}/{WEIGHTS_FILE}", info.weights_sha256, info.structure)
    return model.eval(), info


def load_variant_members(model_dir: str, info: ArrayModelInfo) -> list[tuple[nn.Module, ArrayModelInfo]]:
    """Every member of the variant ensemble in `model_dir`, in order; a member whose weights are not those
    the root recorded is a ValueError naming it."""
    if info.variants is None:
        raise ValueError(f"{model_dir}: the model is not a variant ensemble")
    members = []
    for k, recorded in enumerate(info.variants):
        folder = f"{model_dir}/{variant_member_path(k)}"
        member, member_info = load_array_model(folder)
        if member_info.weights_sha256 != recorded.weights_sha256 or member_info.classes != info.classes:
            raise ValueError(
                f"{folder}: variant member {k} is not the one {model_dir}/{INFO_FILE} was trained with (a member "
                "of another run): train the ensemble again"
            )
        members.append((member, member_info))
    return members
