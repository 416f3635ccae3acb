"""Strict validation of a document against pydantic models generated from an OpenAPI spec.

The generated models (hera for Argo, cloudcoil for prometheus-operator) ignore unknown keys, so
`model_validate` alone would pass `spec.triggers[0].template.argoWorkflow.sourc`. The walker here follows
the input dict along the model's fields and aliases (through Optional, Union, list, dict, RootModel) and
reports every key the model does not declare; then `model_validate` on the same data checks the types.

While walking it also builds the data `model_validate` should see (the normalized copy): generated models
differ from the real JSON in a few places that are listed below (INLINE, EMBEDDED, LENIENT_STRING).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pydantic
from pydantic import BaseModel, RootModel

# Go structs embedded with `json:",inline"` whose fields sit in the parent object in real YAML, but which
# the Argo swagger (and so hera) models as a nested field: model class name -> that field's alias.
INLINE: dict[str, str] = {
    "WebhookEventSource": "webhookContext",
    "ResourceEventSource": "groupVersionResource",
}
# Models that stand for a whole embedded Kubernetes object (a Sensor trigger's `source.resource`). The
# swagger calls it base64 bytes; in YAML it is the object itself, validated as its own kind by the caller.
EMBEDDED: frozenset[str] = frozenset({"K8SResource"})
# Argo's AnyString fields accept numbers and booleans in YAML and turn them into strings; hera types them
# `str`. Quantities (`cpu: 1`) likewise accept numbers.
LENIENT_STRING: frozenset[tuple[str, str]] = frozenset({("Parameter", "value"), ("Parameter", "default")})
LENIENT_ROOTS: frozenset[str] = frozenset({"Quantity"})
# Argo Events int64/uint64 fields (from its generated.proto). The Argo swagger is generated from protobuf,
# which renders 64-bit integers as strings, so hera types them `str`; the controller's Go JSON decoding
# wants a number, so here a number passes and a string is the error.
INT64_FIELDS: frozenset[tuple[str, str]] = frozenset(
    {
        ("GerritEventSource", "max_tries"),
        ("GithubAppCreds", "app_id"),
        ("GithubAppCreds", "installation_id"),
        ("GithubEventSource", "id"),
        ("HTTPTrigger", "timeout"),
        ("KafkaEventSource", "limit_events_per_second"),
        ("LogTrigger", "interval_seconds"),
        ("SQSEventSource", "wait_time_seconds"),
        ("WebhookContext", "max_payload_size"),
    }
)


def join(path: str, key: str | int) -> str:
    """`a.b`, `a[0]`, and `a["app.kubernetes.io/name"]` for keys that are not plain identifiers."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if key and all(c.isalnum() or c in "_-" for c in key):
        return f"{path}.{key}" if path else key
    return f'{path}["{key}"]'


@dataclass
class Walk:
    """What one walk collects."""

    # "path: unknown field 'key' (Model)", and type errors the generated models cannot see (INT64_FIELDS).
    errors: list[str] = field(default_factory=list)
    # Called for every mapping matched to a model: (model class, the mapping, its path).
    visit: Callable[[type[BaseModel], dict[str, Any], str], None] | None = None
    # Called for every embedded object (see EMBEDDED): (the object, its path).
    embedded: Callable[[dict[str, Any], str], None] | None = None


@dataclass(frozen=True)
class _Field:
    name: str  # python attribute name
    key: str  # the JSON key (alias)
    annotation: Any
    inline_of: str | None = None  # JSON key of the inline field this key belongs to
    inline_model: str | None = None  # and the name of its model


@cache
def fields_of(model: type[BaseModel]) -> dict[str, _Field]:
    """JSON key -> field, with INLINE fields' own keys lifted into the parent."""
    out: dict[str, _Field] = {}
    inline_key = INLINE.get(model.__name__)
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key == inline_key:
            inner = next(iter(_models_in(info.annotation)), None)
            if inner is not None:
                for sub in fields_of(inner).values():
                    out[sub.key] = _Field(sub.name, sub.key, sub.annotation, key, inner.__name__)
                continue
        out[key] = _Field(name, key, info.annotation)
    return out


def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _union_args(annotation: Any) -> tuple[Any, ...]:
    annotation = _strip(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return tuple(_strip(a) for a in typing.get_args(annotation) if a is not type(None))
    return (annotation,)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    return [a for a in _union_args(annotation) if _is_model(a)]


def walk(value: Any, annotation: Any, path: str, ctx: Walk) -> Any:
    """Check `value` against `annotation`; return the normalized copy for model_validate."""
    if value is None:
        return None
    candidates = _union_args(annotation)
    if isinstance(value, dict):
        models = [c for c in candidates if _is_model(c)]
        maps = [c for c in candidates if typing.get_origin(c) is dict]
        if models:
            return _walk_best_model(value, models, path, ctx)
        if maps:
            args = typing.get_args(maps[0])
            inner = args[1] if len(args) == 2 else Any
            return {k: walk(v, inner, join(path, str(k)), ctx) for k, v in value.items()}
        return value
    if isinstance(value, list):
        lists = [c for c in candidates if typing.get_origin(c) is list]
        if lists:
            args = typing.get_args(lists[0])
            inner = args[0] if args else Any
            return [walk(v, inner, join(path, i), ctx) for i, v in enumerate(value)]
        return value
    lenient = any(_is_model(c) and c.__name__ in LENIENT_ROOTS for c in candidates)
    if lenient and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _walk_best_model(value: dict[str, Any], models: list[type[BaseModel]], path: str, ctx: Walk) -> Any:
    if len(models) == 1:
        return _walk_model(value, models[0], path, ctx)
    # A union of several models: report against the one the mapping fits best.
    best: tuple[int, type[BaseModel]] | None = None
    for model in models:
        trial = Walk()
        _walk_model(value, model, path, trial)
        if best is None or len(trial.errors) < best[0]:
            best = (len(trial.errors), model)
    assert best is not None
    return _walk_model(value, best[1], path, ctx)


def _walk_model(value: dict[str, Any], model: type[BaseModel], path: str, ctx: Walk) -> Any:
    if issubclass(model, RootModel):
        return walk(value, model.model_fields["root"].annotation, path, ctx)
    if model.__name__ in EMBEDDED:
        if ctx.embedded is not None:
            ctx.embedded(value, path)
        return None  # the embedded object is validated as its own kind, not as base64 bytes
    if ctx.visit is not None:
        ctx.visit(model, value, path)
    fields = fields_of(model)
    out: dict[str, Any] = {}
    for key, item in value.items():
        spec = fields.get(key)
        if spec is None:
            ctx.errors.append(f"{join(path, str(key))}: unknown field {key!r} ({model.__name__})")
            continue
        normalized = walk(item, spec.annotation, join(path, key), ctx)
        if (model.__name__, spec.name) in LENIENT_STRING and isinstance(normalized, int | float | bool):
            normalized = str(normalized).lower() if isinstance(normalized, bool) else str(normalized)
        elif (spec.inline_model or model.__name__, spec.name) in INT64_FIELDS:
            normalized = _int64(item, join(path, key), ctx)
        if spec.inline_of:
            out.setdefault(spec.inline_of, {})[key] = normalized
        else:
            out[key] = normalized
    return out


def _int64(value: Any, path: str, ctx: Walk) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    ctx.errors.append(f"{path}: Input should be a valid integer (a 64-bit integer field), got {value!r}")
    return None


def _loc(loc: tuple[int | str, ...], prefix: str) -> str:
    path = prefix
    inline_keys = set(INLINE.values())
    for part in loc:
        if part in inline_keys:
            continue  # the walker nested inline keys; the user wrote them one level up
        path = join(path, part)
    return path


def strict_validate(
    doc: dict[str, Any],
    model: type[BaseModel],
    path: str = "",
    visit: Callable[[type[BaseModel], dict[str, Any], str], None] | None = None,
    embedded: Callable[[dict[str, Any], str], None] | None = None,
) -> list[str]:
    """Unknown keys at any depth, then type errors from the model; messages start with the path."""
    ctx = Walk(visit=visit, embedded=embedded)
    normalized = walk(doc, model, path, ctx)
    errors = list(ctx.errors)
    try:
        model.model_validate(normalized)
    except pydantic.ValidationError as exc:
        for err in exc.errors():
            # Unknown keys were already reported; pydantic only says "extra" where a model forbids them.
            if err["type"] == "extra_forbidden":
                continue
            errors.append(f"{_loc(tuple(err['loc']), path) or '<root>'}: {err['msg']}")
    return errors
