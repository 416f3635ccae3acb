"""Freezing and unfreezing layer groups (the Lightning split: what trains, and how it joins the optimizer)."""

from __future__ import annotations

from typing import Any

from torch import nn

from rooivalk.models.groups import LayerGroup


def set_trainable(model: nn.Module, groups: list[LayerGroup], trainable: set[str]) -> int:
    """requires_grad per group; returns the number of trainable parameters."""
    params = dict(model.named_parameters())
    for group in groups:
        for name in group.param_names:
            params[name].requires_grad_(group.name in trainable)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freeze_batchnorm_of_frozen(model: nn.Module, groups: list[LayerGroup], trainable: set[str]) -> None:
    """BatchNorm in frozen groups stays in eval mode: keeps its pretrained running statistics."""
    modules = dict(model.named_modules())
    for group in groups:
        if group.name in trainable:
            continue
        for name in group.module_names:
            module = modules.get(name)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def param_groups_for(model: nn.Module, group: LayerGroup, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """A layer group as optimizer param groups; biases and norm weights get no weight decay."""
    params = dict(model.named_parameters())
    decay = [params[n] for n in group.param_names if params[n].ndim > 1]
    no_decay = [params[n] for n in group.param_names if params[n].ndim <= 1]
    return [
        {"params": tensors, "lr": lr, "weight_decay": wd, "group": group.name}
        for tensors, wd in ((decay, weight_decay), (no_decay, 0.0))
        if tensors
    ]
