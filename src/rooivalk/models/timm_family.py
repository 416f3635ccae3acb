"""The `timm` model family: any timm architecture, optionally from a local pretrained state dict."""

from __future__ import annotations

import os

from torch import nn

from rooivalk.models.registry import register_family
from rooivalk.models.weights import load_pretrained
from rooivalk.plan import ModelSpec


@register_family("timm", task="image")
def create_timm_model(spec: ModelSpec, num_classes: int) -> nn.Module:
    # A hub lookup would hang ~46 s retrying with no network; weights only ever come from spec.pretrained.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import timm

    if not timm.is_model(spec.architecture):
        close = timm.list_models(f"*{spec.architecture.split('_')[0]}*")[:8]
        raise ValueError(f"model.architecture: {spec.architecture!r} is not a timm model; similar: {close}")
    model = timm.create_model(spec.architecture, pretrained=False, num_classes=num_classes, drop_rate=spec.drop_rate)
    if spec.pretrained:
        cfg: dict[str, object] = getattr(model, "pretrained_cfg", None) or {}
        load_pretrained(model, spec.pretrained, classifier_prefix=str(cfg.get("classifier", "classifier")))
    return model


def normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the architecture's weights expect; EfficientNet-Lite's is 0.5/0.5, not ImageNet's."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))


def input_channels(model: nn.Module) -> int:
    """Channels the architecture's weights expect (3 unless its pretrained config says otherwise)."""
    return int((getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3,))[0])
