"""Registry + factory for model families (timm's pattern).

A family is a function that builds an `nn.Module` from a `ModelSpec` and a class count, and names the
training task its models use ("image": timm-style image classifiers; "tensor": sensor models on
preprocessed arrays). Built-in families register with `@register_family("name", task=...)`; installed
packages add families through the `rooivalk.families` entry-point group (rooivalk.plugins), loaded
the first time a lookup misses or the families are listed. `create_model` looks them up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from torch import nn

from rooivalk.plan import ModelSpec
from rooivalk.plugins import FAMILIES_GROUP, PluginError, PluginInfo, Registry

FamilyBuilder = Callable[[ModelSpec, int], nn.Module]
DEFAULT_TASK = "image"
_TASKS: dict[str, str] = {}


def _accept(plugin: PluginInfo) -> FamilyBuilder:
    """An entry point naming a plain builder: the family takes the entry point's name, and the task of
    its `rooivalk_task` attribute ("image" without one)."""
    if not callable(plugin.obj):
        raise PluginError(
            f"{plugin.describe()}: a model family is a callable (ModelSpec, num_classes) -> nn.Module, "
            f"not {type(plugin.obj).__name__}"
        )
    _TASKS[plugin.name] = str(getattr(plugin.obj, "rooivalk_task", DEFAULT_TASK))
    return cast(FamilyBuilder, plugin.obj)


_FAMILIES: Registry[FamilyBuilder] = Registry("model family", FAMILIES_GROUP, _accept)


def register_family(name: str, task: str = DEFAULT_TASK) -> Callable[[FamilyBuilder], FamilyBuilder]:
    """Decorator: make the builder the family `name`, whose models train with the task `task`."""

    def decorator(builder: FamilyBuilder) -> FamilyBuilder:
        _FAMILIES.add(name, builder)
        _TASKS[name] = task
        return builder

    return decorator


def list_families() -> list[str]:
    """Every family, installed plugins included (loads them)."""
    return _FAMILIES.names()


def _builder(name: str) -> FamilyBuilder:
    builder = _FAMILIES.lookup(name)
    if builder is None:
        raise ValueError(f"model.family: unknown family {name!r}; known: {_FAMILIES.known_names()}")
    return builder


def family_task(name: str) -> str:
    """The training task of the family's models."""
    _builder(name)
    return _TASKS[name]


def family_origin(name: str) -> str:
    """ "built-in", or "<distribution> <version> (<module:attr>)" for a plugin."""
    _builder(name)
    return _FAMILIES.origin(name)


def create_model(spec: ModelSpec, num_classes: int) -> nn.Module:
    """Build the plan's model with `num_classes` outputs (pretrained weights loaded if given)."""
    return _builder(spec.family)(spec, num_classes)


def create_unweighted_model(spec: ModelSpec) -> nn.Module:
    """The architecture without weights, for inspecting its groups (a 2-class head if num_classes is auto,
    one input feature if num_features is auto: neither changes the layer groups)."""
    classes = spec.num_classes if spec.num_classes != "auto" else 2
    features = spec.num_features if spec.num_features != "auto" else 1
    return create_model(spec.model_copy(update={"pretrained": None, "num_features": features}), classes)
