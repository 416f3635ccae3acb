"""Registry + factory for model families (timm's pattern).

A family is a function that builds an `nn.Module` from a `ModelSpec` and a class count. Families
register themselves with `@register_family("name")`; `create_model` looks them up.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from rooivalk.plan import ModelSpec

FamilyBuilder = Callable[[ModelSpec, int], nn.Module]
_FAMILIES: dict[str, FamilyBuilder] = {}


def register_family(name: str) -> Callable[[FamilyBuilder], FamilyBuilder]:
    def decorator(builder: FamilyBuilder) -> FamilyBuilder:
        if name in _FAMILIES:
            raise ValueError(f"model family {name!r} is already registered")
        _FAMILIES[name] = builder
        return builder

    return decorator


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def create_model(spec: ModelSpec, num_classes: int) -> nn.Module:
    """Build the plan's model with `num_classes` outputs (pretrained weights loaded if given)."""
    try:
        builder = _FAMILIES[spec.family]
    except KeyError:
        raise ValueError(f"model.family: unknown family {spec.family!r}; known: {list_families()}") from None
    return builder(spec, num_classes)


def create_unweighted_model(spec: ModelSpec) -> nn.Module:
    """The architecture without weights, for inspecting its groups (a 2-class head if num_classes is auto)."""
    classes = spec.num_classes if spec.num_classes != "auto" else 2
    return create_model(spec.model_copy(update={"pretrained": None}), classes)
