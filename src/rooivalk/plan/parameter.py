"""A plan's nulls across KFP: KFP parameters cannot hold None, so `Plan.to_parameter` drops nulls,
and a dropped key comes back as its default. For a key whose default is not null that would turn a
setting off -> on (`training.grad_clip_norm: null` back to 1.0), so those keys travel as a list of
paths under NULLS_KEY and `restore_nulls` (a before-validator of Plan) puts them back.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

NULLS_KEY = "_nulls"  # not a plan key: the plan models forbid unknown keys, and this one is popped first


def explicit_nulls(model: BaseModel, path: tuple[str | int, ...] = ()) -> Iterator[list[str | int]]:
    """Paths of fields that are None where their default is not: what dropping nulls would change."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        here = (*path, name)
        if value is None and (field.default_factory is not None or field.default is not None):
            yield list(here)
        for key, child in _children(value):
            yield from explicit_nulls(child, here if key is None else (*here, key))


def _children(value: Any) -> Iterator[tuple[str | int | None, BaseModel]]:
    """Nested plan models of a field's value: itself, or the models in its list or dict (with their key)."""
    if isinstance(value, BaseModel):
        yield None, value
    items = enumerate(value) if isinstance(value, list | tuple) else value.items() if isinstance(value, dict) else ()
    for key, item in items:
        if isinstance(item, BaseModel):
            yield key, item


def restore_nulls(data: Any) -> Any:
    """A parameter dict with the keys listed under NULLS_KEY set back to None (a copy; other input as is)."""
    if not isinstance(data, dict) or NULLS_KEY not in data:
        return data
    data = copy.deepcopy(data)
    for path in data.pop(NULLS_KEY):
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
        node[path[-1]] = None
    return data
