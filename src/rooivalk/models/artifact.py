"""The trained-model artifact: weights plus everything needed to rebuild and feed the model.

Layout of a model directory:
    model.pt    state dict (loaded with weights_only=True)
    model.json  ModelInfo: spec, classes, input size, normalization, lineage, and the layer sizes of a
                channel-pruned model (rooivalk.models.pruning), which its family would not build from the spec
A variant ensemble (rooivalk.plan.variants) has no model.pt: its members are model folders of their own under
members/<k>, which the root's model.json (written last) lists with their weights' digests; it loads as one
VariantEnsemble network.
"""

from __future__ import annotations

import io
from typing import Any, Protocol

import torch
from pydantic import BaseModel
from torch import nn

from rooivalk import storage
from rooivalk.models.pruning import pruned_structure, restore_structure
from rooivalk.models.registry import create_model
from rooivalk.models.variant_ensemble import VariantEnsemble
from rooivalk.plan import ModelSpec

WEIGHTS_FILE = "model.pt"
INFO_FILE = "model.json"
VARIANTS_DIR = "members"  # a variant ensemble's members: <model dir>/members/<k>


def variant_member_path(member: int) -> str:
    """Where variant member `member` (0..M-1) lives under a model directory."""
    return f"{VARIANTS_DIR}/{member}"


class VariantMemberInfo(BaseModel):
    """One member of a variant ensemble, as the root's model.json records it."""

    overrides: dict[str, Any]  # the member's plan overrides (variants.members[k])
    weight: float  # normalized: the members' sum to 1
    architecture: str
    plan_digest: str  # the member's resolved plan
    weights_sha256: str  # its model.pt: a member of another run is refused when loading


class ModelInfo(BaseModel):
    spec: ModelSpec
    classes: list[str]
    input_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset_version: str
    plan_digest: str
    weights_sha256: str | None = None  # checked on load (None in artifacts older than the check)
    structure: dict[str, dict[str, Any]] | None = None  # channel pruning's layer sizes; None: the spec's
    variants: list[VariantMemberInfo] | None = None  # a variant ensemble: its members under members/<k>

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def state_dict_bytes(model: nn.Module) -> bytes:
    """The model's state dict as torch.save bytes: CPU, contiguous, loadable with weights_only=True."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def load_state_dict_into(
    model: nn.Module, uri: str, sha256: str | None = None, structure: dict[str, dict[str, Any]] | None = None
) -> None:
    """Load the state dict at `uri` (weights_only=True, strict) into `model`; `sha256`: the digest
    the artifact's info file recorded (a mismatch raises storage.IntegrityError); `structure`: the
    layer sizes of a channel-pruned model, applied to the freshly built `model` first."""
    state = torch.load(io.BytesIO(storage.read_bytes(uri, sha256=sha256)), map_location="cpu", weights_only=True)
    if structure:
        restore_structure(model, structure)
    model.load_state_dict(state, strict=True)


def read_info_file(folder: str, name: str, what: str) -> bytes:
    """The artifact's info file, written last: a folder without it is not (or not yet) a `what`."""
    uri = f"{folder}/{name}"
    if not storage.exists(uri):
        raise storage.StorageError(f"{folder}: not a {what} (no {name}; an interrupted write leaves none)")
    return storage.read_bytes(uri)


class WeightedInfo(Protocol):
    """An artifact's info (ModelInfo, ArrayModelInfo, DetectorInfo): it records its weights' digest and
    the layer sizes of a channel-pruned model."""

    weights_sha256: str | None
    structure: dict[str, dict[str, Any]] | None

    def model_dump_json(self, *, indent: int | None = None) -> str: ...


def save_trained_model(model_dir: str, model: nn.Module, info: WeightedInfo) -> dict[str, str]:
    """Write the weights, then the info file carrying their sha256 (last: it marks a complete
    artifact); returns {file: sha256}. Every single-model artifact kind saves through this."""
    info.structure = pruned_structure(model)
    info.weights_sha256 = storage.write_bytes(f"{model_dir}/{WEIGHTS_FILE}", state_dict_bytes(model))
    return {
        WEIGHTS_FILE: info.weights_sha256,
        INFO_FILE: storage.write_text(f"{model_dir}/{INFO_FILE}", info.model_dump_json(indent=2)),
    }


def read_model_info(model_dir: str) -> ModelInfo:
    return ModelInfo.model_validate_json(read_info_file(model_dir, INFO_FILE, "rooivalk model"))


def load_trained_model(model_dir: str) -> tuple[nn.Module, ModelInfo]:
    """Rebuild the architecture (no pretrained download) and load the trained weights, in eval mode; a variant
    ensemble as one VariantEnsemble network of its members."""
    info = read_model_info(model_dir)
    if info.variants is not None:
        members = [model for model, _ in load_image_members(model_dir, info)]
        return VariantEnsemble(members, [member.weight for member in info.variants]).eval(), info
    model = create_model(info.spec.model_copy(update={"pretrained": None}), info.num_classes)
    load_state_dict_into(model, f"{model_dir}/{WEIGHTS_FILE}", info.weights_sha256, info.structure)
    return model.eval(), info


def load_image_members(model_dir: str, info: ModelInfo) -> list[tuple[nn.Module, ModelInfo]]:
    """Every member of the image variant ensemble in `model_dir`, in order; a member whose weights, classes or
    image input are not those the root recorded is a ValueError naming it."""
    if info.variants is None:
        raise ValueError(f"{model_dir}: the model is not a variant ensemble")
    members = []
    for k, recorded in enumerate(info.variants):
        folder = f"{model_dir}/{variant_member_path(k)}"
        member, member_info = load_trained_model(folder)
        contract = ("classes", "input_size", "in_chans", "mean", "std")
        if member_info.weights_sha256 != recorded.weights_sha256 or any(
            getattr(member_info, name) != getattr(info, name) for name in contract
        ):
            raise ValueError(
                f"{folder}: variant member {k} is not the one {model_dir}/{INFO_FILE} was trained with (a member "
                "of another run): train the ensemble again"
            )
        members.append((member, member_info))
    return members
