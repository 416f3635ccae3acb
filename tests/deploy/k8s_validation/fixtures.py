"""Test helpers: renders as pytest sees them, the YAML fixtures, and planting one mistake in a copy."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from .refs import external_objects
from .render import Doc, Render, RenderError, Target, ToolMissingError, chart_values, helm_targets, parse_documents
from .render import render as _render

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DELETE = object()


def rendered(target: Target) -> Render:
    """The cached render of a target; skips when helm/kubectl is missing, fails on a render error."""
    try:
        return _render(target)
    except ToolMissingError as exc:
        pytest.skip(str(exc))
    except RenderError as exc:
        pytest.fail(str(exc), pytrace=False)


def external_for(render: Render) -> set[tuple[str, str]]:
    """Objects the user creates, for a render: from its own chart values, or (kustomize, which has no
    values) from those of every values file of the chart."""
    if render.target.kind == "helm":
        return external_objects(render.values)
    names: set[tuple[str, str]] = set()
    for target in helm_targets():
        names |= external_objects(chart_values(target.path))
    return names


def load(name: str) -> list[Doc]:
    return list(parse_documents((FIXTURES / name).read_text()))


def good() -> list[Doc]:
    """A fresh copy of the deployment that passes every check."""
    return load("good.yaml")


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    for doc in docs:
        meta = doc.get("metadata") or {}
        if doc.get("kind") == kind and name in (meta.get("name"), meta.get("generateName")):
            return doc
    raise KeyError(f"{kind}/{name} not in the fixture")


_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def edit(docs: list[Doc], kind: str, name: str, path: str, value: Any = DELETE) -> list[Doc]:
    """Set (or delete) `path` (`spec.containers[0].image`) in Kind/name of a copy of docs; return the copy."""
    docs = copy.deepcopy(docs)
    node: Any = find(docs, kind, name)
    keys: list[str | int] = [int(i) if i else k for k, i in _PART.findall(path)]
    for key in keys[:-1]:
        node = node[key]
    if value is DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return docs


def remove(docs: list[Doc], kind: str, name: str) -> list[Doc]:
    """A copy of docs without Kind/name."""
    target = find(docs, kind, name)
    return [copy.deepcopy(d) for d in docs if d is not target]


def expectations(path: Path) -> list[str]:
    """The `# expect: ...` lines of a fixture: substrings the reported errors must contain, one each."""
    return [line.split(":", 1)[1].strip() for line in path.read_text().splitlines() if line.startswith("# expect:")]
