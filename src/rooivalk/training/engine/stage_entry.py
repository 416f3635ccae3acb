"""Entering a stage: which groups train, and how they join the one persistent optimizer.

Groups unfrozen at a stage boundary join the optimizer with `add_param_group`, so groups that were
already training keep their moments; groups frozen again keep their state at LR 0. A stage with
other optimizer settings starts a new optimizer (state cannot carry over between kinds).
"""

from __future__ import annotations

from typing import Any

from torch import nn, optim

from rooivalk.models.groups import LayerGroup, resolve_selectors
from rooivalk.plan import OptimizerSpec
from rooivalk.training.engine.batchnorm import batchnorm_affine_names
from rooivalk.training.engine.freezing import param_groups_for, set_trainable
from rooivalk.training.engine.optim import build_optimizer
from rooivalk.training.engine.stages import ResolvedStage


def frozen_batchnorm_affine(
    model: nn.Module, groups: list[LayerGroup], trainable: set[str]
) -> dict[str, list[nn.Parameter]]:
    """bn_unfreeze: affine_early: BatchNorm weights and biases of frozen groups train (their
    statistics stay frozen in eval mode); marks them trainable and returns them per group."""
    params = dict(model.named_parameters())
    affine = {}
    for group in groups:
        if group.name in trainable:
            continue
        names = batchnorm_affine_names(model, group)
        for name in names:
            params[name].requires_grad_(True)
        if names:
            affine[group.name] = [params[name] for name in names]
    return affine


def join_optimizer(
    optimizer: optim.Optimizer | None, param_groups: list[dict[str, Any]], spec: OptimizerSpec
) -> optim.Optimizer | None:
    """Add param groups, leaving out tensors the optimizer already holds (BatchNorm affines that
    trained early join once, under their layer group's name, and keep their moments)."""
    held = {id(p) for g in optimizer.param_groups for p in g["params"]} if optimizer else set()
    for param_group in param_groups:
        params = [p for p in param_group["params"] if id(p) not in held]
        if not params:
            continue
        param_group = {**param_group, "params": params}
        if optimizer is None:
            optimizer = build_optimizer(spec, [param_group])
        else:
            optimizer.add_param_group(param_group)
    return optimizer


def decay_group_names(groups: list[LayerGroup], spec: OptimizerSpec) -> set[str]:
    """The groups whose weights get weight decay (optimizer.decay_groups; null: all)."""
    if spec.decay_groups is None:
        return {group.name for group in groups}
    try:
        return set(resolve_selectors(groups, spec.decay_groups))
    except ValueError as error:
        raise ValueError(f"optimizer.decay_groups: {error}") from None


def prepare_stage_optimizer(
    model: nn.Module,
    groups: list[LayerGroup],
    stage: ResolvedStage,
    optimizer: optim.Optimizer | None,
    spec: OptimizerSpec,
    affine_early: bool,
) -> optim.Optimizer:
    """Freeze/unfreeze the model for `stage` and return the optimizer holding its trainable groups
    at the stage's LRs (`optimizer` extended, or a new one when None)."""
    trainable = set(stage.group_lrs)
    set_trainable(model, groups, trainable)
    affine_lr = min(stage.group_lrs.values())
    affine = frozen_batchnorm_affine(model, groups, trainable) if affine_early else {}
    decayed = decay_group_names(groups, spec)
    for group in groups:
        new: list[dict[str, Any]] = []
        if group.name in trainable:
            weight_decay = spec.weight_decay if group.name in decayed else 0.0
            new = param_groups_for(model, group, stage.group_lrs[group.name], weight_decay)
        elif group.name in affine:
            new = [{"params": affine[group.name], "lr": affine_lr, "weight_decay": 0.0, "group": group.name}]
        optimizer = join_optimizer(optimizer, new, spec)
    if optimizer is None:
        raise ValueError(f"stage {stage.name!r} trains no parameters")
    for param_group in optimizer.param_groups:  # re-frozen groups keep state but get LR 0
        fallback = affine_lr if param_group["group"] in affine else 0.0
        param_group["lr"] = stage.group_lrs.get(param_group["group"], fallback)
    return optimizer
