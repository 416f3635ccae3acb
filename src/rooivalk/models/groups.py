"""Layer groups: the units that progressive unfreezing freezes, unfreezes and gives an LR.

Groups come from a model family's own declaration (a `rooivalk_layer_groups()` method returning
[(name, [parameter names])]) or, for timm models, from timm's `group_matcher`. The classifier is
always split off as the last group, "head". Groups are ordered from input to output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

HEAD = "head"
# A group a family builds new beside its head, with no pretrained weights (a detector's feature pyramid):
# the auto schedule's first stage trains it with the head instead of leaving it random and frozen.
NECK = "neck"


@dataclass
class LayerGroup:
    name: str
    param_names: list[str]
    num_params: int = 0
    module_names: list[str] = field(default_factory=list)


def _classifier_params(model: nn.Module) -> list[str]:
    get_classifier = getattr(model, "get_classifier", None)
    classifier = get_classifier() if callable(get_classifier) else None
    if isinstance(classifier, nn.Module):
        ids = {id(p) for p in classifier.parameters()}
        return [name for name, p in model.named_parameters() if id(p) in ids]
    last = list(model.named_children())[-1][0]
    return [name for name, _ in model.named_parameters() if name.startswith(last + ".")]


def _common_prefix(names: list[str]) -> str:
    parts = [name.split(".")[:-1] for name in names]
    prefix: list[str] = []
    for column in zip(*parts, strict=False):
        if len(set(column)) != 1:
            break
        prefix.append(column[0])
    return ".".join(prefix)


def _timm_groups(model: nn.Module, head: set[str]) -> list[tuple[str, list[str]]]:
    from timm.models import group_parameters

    matcher = model.group_matcher(coarse=True)  # type: ignore[operator]
    grouped = group_parameters(model, matcher, return_values=False, reverse=False)
    result: list[tuple[str, list[str]]] = []
    for index, names in enumerate(grouped.values()):
        names = [n for n in names if n not in head]
        if not names:
            continue
        if index == 0 and isinstance(matcher, dict) and "stem" in matcher:
            name = "stem"
        else:
            # "blocks.3" for a coarse timm stage; a group spanning modules is named by its first one.
            name = ".".join(_common_prefix(names).split(".")[:2])
            if not name:
                found = re.match(r"^([A-Za-z_]\w*(?:\.\d+)?)", names[0])
                name = found.group(1) if found else f"group{index}"
        result.append((name, names))
    return result


def _children_groups(model: nn.Module, head: set[str]) -> list[tuple[str, list[str]]]:
    result = []
    for child_name, child in model.named_children():
        names = [f"{child_name}.{n}" for n, _ in child.named_parameters()]
        names = [n for n in names if n not in head]
        if names:
            result.append((child_name, names))
    return result


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """The model's groups from input to output; the last one is the classifier, named "head"."""
    declared = getattr(model, "rooivalk_layer_groups", None)
    if callable(declared):
        raw = [(name, list(names)) for name, names in declared()]
    else:
        head = set(_classifier_params(model))
        raw = _timm_groups(model, head) if hasattr(model, "group_matcher") else _children_groups(model, head)
        raw.append((HEAD, [n for n, _ in model.named_parameters() if n in head]))
    params = dict(model.named_parameters())
    groups: list[LayerGroup] = []
    seen: dict[str, int] = {}
    for name, names in raw:
        if name in seen:  # keep names unique: blocks.6, blocks.6#2
            seen[name] += 1
            name = f"{name}#{seen[name]}"
        seen.setdefault(name, 1)
        modules = sorted({n.rsplit(".", 1)[0] for n in names})
        groups.append(LayerGroup(name, names, sum(params[n].numel() for n in names), modules))
    covered = {n for g in groups for n in g.param_names}
    missing = [n for n in params if n not in covered]
    if missing:
        raise ValueError(f"layer groups leave parameters out: {missing[:5]}")
    return groups


def resolve_selectors(groups: list[LayerGroup], selectors: list[str]) -> list[str]:
    """Group names chosen by selectors ("head", "all", "last:N", or a group name), in model order."""
    names = [g.name for g in groups]
    backbone = [n for n in names if n != HEAD]
    chosen: set[str] = set()
    for selector in selectors:
        if selector == "all":
            chosen.update(names)
        elif selector.startswith("last:"):
            count = selector.partition(":")[2]
            if not count.isdigit() or not 0 < int(count) <= len(backbone):
                raise ValueError(f"{selector!r}: N must be 1..{len(backbone)} (backbone groups: {backbone})")
            chosen.update(backbone[-int(count) :])
        elif selector in names:
            chosen.add(selector)
        else:
            raise ValueError(f"unknown layer group {selector!r}; the model's groups are: {names}")
    return [n for n in names if n in chosen]
