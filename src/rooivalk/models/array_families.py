"""The model families of array data: `rnn` (data.format sequences) and `mlp` (data.format table).

Their inputs come from the data: `model.num_features` is filled from the dataset before a model is
built (rooivalk.training.array_training), so a plan pointed at another file of the same format
trains whatever its number of features. `model.architecture` names the shape:
- rnn: a preset of rooivalk.models.rnn.PRESETS (lightweight, standard, deep), or `<cell>-<hidden>x<layers>`
  (e.g. `gru-128x2`: bidirectional first layer, dense head of 256 as the presets);
- mlp: the hidden widths joined by `-` (e.g. `256-128-64`, the reference plan's attribution MLP).
`model.drop_rate` is the dropout of both. `model.pretrained` (a state dict written by rooivalk, e.g. an
earlier run's model.pt) loads every tensor whose name and shape match: a new class count gets a new
last layer, which the plan's stages can train first (progressive unfreezing of a pretrained encoder).
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import replace

import torch
from torch import nn

from rooivalk import storage
from rooivalk.models.mlp import build_mlp
from rooivalk.models.registry import register_family
from rooivalk.models.rnn import PRESETS, RNNSettings, build_rnn
from rooivalk.plan import ModelSpec

log = logging.getLogger(__name__)
_RNN_SHAPE = re.compile(r"^(lstm|gru)-([1-9]\d*)x([1-9]\d*)$")  # sizes >= 1
_MLP_SHAPE = re.compile(r"^[1-9]\d*(-[1-9]\d*)*$")  # widths >= 1


def _num_features(spec: ModelSpec) -> int:
    if spec.num_features == "auto":
        raise ValueError(
            f"model.num_features is auto: a {spec.family} model is built once the dataset gives its features"
        )
    return spec.num_features


def rnn_settings(architecture: str, drop_rate: float) -> RNNSettings:
    """The RNN settings an architecture names (see the module docstring)."""
    if architecture in PRESETS:
        return replace(PRESETS[architecture], dropout=drop_rate)
    match = _RNN_SHAPE.match(architecture)
    if match is None:
        raise ValueError(
            f"model.architecture: {architecture!r} is not an rnn shape; use a preset ({', '.join(PRESETS)}) "
            "or <lstm|gru>-<hidden>x<layers>, e.g. gru-128x2"
        )
    cell, hidden, layers = match.group(1), int(match.group(2)), int(match.group(3))
    return RNNSettings(cell=cell, hidden=hidden, layers=layers, dropout=drop_rate)  # type: ignore[arg-type]


def mlp_widths(architecture: str) -> list[int]:
    if _MLP_SHAPE.match(architecture) is None:
        raise ValueError(
            f"model.architecture: {architecture!r} is not an mlp shape; "
            "give hidden widths joined by '-', e.g. 256-128-64"
        )
    return [int(width) for width in architecture.split("-")]


def load_matching_weights(model: nn.Module, uri: str) -> list[str]:
    """Load the tensors of the state dict at `uri` whose name and shape match `model`'s; returns the
    names of the model's tensors left as initialized (logged), e.g. a last layer of another class count."""
    state = torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"model.pretrained: {uri} holds a {type(state).__name__}, not a state dict")
    own = model.state_dict()
    # BatchNorm's scalar step counters match any model with as many layers: they prove nothing.
    matching = {
        name: value
        for name, value in state.items()
        if name in own and own[name].shape == value.shape and not name.endswith("num_batches_tracked")
    }
    if not set(matching) & {name for name, _ in model.named_parameters()}:
        raise ValueError(f"model.pretrained: no tensor of {uri} matches the model by name and shape")
    model.load_state_dict(matching, strict=False)
    fresh = sorted(set(own) - set(matching))
    if fresh:
        log.info("model.pretrained %s: %d tensors kept their initialization: %s", uri, len(fresh), fresh)
    return fresh


def _finish(model: nn.Module, spec: ModelSpec) -> nn.Module:
    if spec.pretrained:
        load_matching_weights(model, spec.pretrained)
    return model


@register_family("rnn", task="sequence")
def create_rnn(spec: ModelSpec, num_classes: int) -> nn.Module:
    return _finish(build_rnn(rnn_settings(spec.architecture, spec.drop_rate), _num_features(spec), num_classes), spec)


@register_family("mlp", task="table")
def create_mlp(spec: ModelSpec, num_classes: int) -> nn.Module:
    widths = mlp_widths(spec.architecture)
    return _finish(build_mlp(_num_features(spec), num_classes, widths, dropout=spec.drop_rate), spec)
