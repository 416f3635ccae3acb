"""Strict schema validation of every rendered document: built-in kinds and the CRD kinds Rooivalk uses.

Built-in kinds: kubernetes-validate's strict JSON schemas (`additionalProperties: false` everywhere), all
errors of a document rather than the first. CRD kinds: the pydantic models of hera (Argo Workflows and
Argo Events, from the Argo v4.0.5 swagger), cloudcoil (prometheus-operator 0.80) and eventbus_model,
walked strictly by strict_models. A kind that no validator covers is itself an error, so a new template
cannot slip past unchecked. A Sensor's embedded trigger resource (`source.resource`, `source.inline`) is
validated as its own kind.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

import jsonschema
import yaml
from kubernetes_validate.utils import schema_contents
from pydantic import BaseModel
from referencing import Registry, Resource

from .render import KUBE_VERSION, Doc
from .strict_models import join, strict_validate

ARGO = "argoproj.io/v1alpha1"
MONITORING = "monitoring.coreos.com/v1"


def _hera_workflows(kind: str) -> Callable[[], type[BaseModel]]:
    def load() -> type[BaseModel]:
        from hera.workflows import models

        return getattr(models, kind)  # type: ignore[no-any-return]

    return load


def _hera_events(kind: str) -> Callable[[], type[BaseModel]]:
    def load() -> type[BaseModel]:
        from hera.events import models

        return getattr(models, kind)  # type: ignore[no-any-return]

    return load


def _prometheus_operator(kind: str) -> Callable[[], type[BaseModel]]:
    def load() -> type[BaseModel]:
        # cloudcoil's module is large (~3 s to import): only loaded when a monitoring document is checked.
        from cloudcoil.models.prometheus_operator import v1

        return getattr(v1, kind)  # type: ignore[no-any-return]

    return load


def _eventbus() -> type[BaseModel]:
    from .eventbus_model import EventBus

    return EventBus


# (apiVersion, kind) -> loader of the pydantic model that validates the whole document.
CRD_MODELS: dict[tuple[str, str], Callable[[], type[BaseModel]]] = {
    (ARGO, "Workflow"): _hera_workflows("Workflow"),
    (ARGO, "WorkflowTemplate"): _hera_workflows("WorkflowTemplate"),
    (ARGO, "ClusterWorkflowTemplate"): _hera_workflows("ClusterWorkflowTemplate"),
    (ARGO, "CronWorkflow"): _hera_workflows("CronWorkflow"),
    (ARGO, "Sensor"): _hera_events("Sensor"),
    (ARGO, "EventSource"): _hera_events("EventSource"),
    (ARGO, "EventBus"): _eventbus,
    (MONITORING, "ServiceMonitor"): _prometheus_operator("ServiceMonitor"),
    (MONITORING, "PodMonitor"): _prometheus_operator("PodMonitor"),
    (MONITORING, "PrometheusRule"): _prometheus_operator("PrometheusRule"),
}


def label(doc: Doc) -> str:
    """`Kind/name` for messages."""
    meta = doc.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName") or "<unnamed>"
    return f"{doc.get('kind', '<no kind>')}/{name}"


# --- built-in kinds -----------------------------------------------------------------------------------


@cache
def _definitions() -> Resource[Any]:
    contents = schema_contents(f"kubernetes-json-schema/{_schema_dir()}/_definitions.json", KUBE_VERSION)
    return Resource.from_contents(contents)


def _schema_dir() -> str:
    major, minor = KUBE_VERSION.split(".")[:2]
    return f"v{major}.{minor}.0-local-strict"


@cache
def builtin_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
    """The strict validator kubernetes-validate would use, or None when it has no schema for the kind."""
    # kubernetes-validate's file naming: `apps/v1` -> `apps-v1`, `rbac.authorization.k8s.io/v1` -> `rbac-v1`.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    filename = f"kubernetes-json-schema/{_schema_dir()}/{kind.lower()}-{group_version}.json"
    try:
        schema = schema_contents(filename, KUBE_VERSION)
    except FileNotFoundError:
        return None
    registry: Registry[Any] = _definitions() @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def _json_path(prefix: str, parts: Iterable[str | int]) -> str:
    path = prefix
    for part in parts:
        path = join(path, part)
    return path or "<root>"


def validate_builtin(doc: Doc, validator: jsonschema.protocols.Validator, prefix: str = "") -> list[str]:
    messages = []
    for error in validator.iter_errors(doc):
        path = _json_path(prefix, error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            # Name each unknown key in the path, as the CRD walker does, not just the parent object.
            declared = set((error.schema or {}).get("properties", {}))
            extra = [k for k in error.instance if k not in declared]
            messages += [f"{join(path.replace('<root>', ''), k)}: unknown field {k!r}" for k in extra]
        else:
            messages.append(f"{path}: {error.message}")
    return sorted(messages)


# --- CRD kinds ----------------------------------------------------------------------------------------


def validate_crd(doc: Doc, model: type[BaseModel], prefix: str = "") -> list[str]:
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}
    nested: list[str] = []

    def embedded(obj: dict[str, Any], path: str) -> None:
        nested.extend(validate_document(obj, prefix=path))

    def visit(node_model: type[BaseModel], value: dict[str, Any], path: str) -> None:
        # An ArtifactLocation may carry the trigger's resource as a YAML string instead of an object.
        inline = value.get("inline") if node_model.__name__ == "ArtifactLocation" else None
        if isinstance(inline, str):
            try:
                parsed = yaml.safe_load(inline)
            except yaml.YAMLError as exc:
                nested.append(f"{join(path, 'inline')}: not YAML: {exc}")
                return
            if isinstance(parsed, dict) and "kind" in parsed:
                nested.extend(validate_document(parsed, prefix=join(path, "inline")))

    errors = strict_validate(body, model, prefix, visit=visit, embedded=embedded)
    return errors + nested


# --- dispatch -----------------------------------------------------------------------------------------


def validate_document(doc: Doc, prefix: str = "") -> list[str]:
    """Every schema error of one document (or embedded object under `prefix`), each `path: message`."""
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return [f"{prefix or '<root>'}: apiVersion and kind must be strings (got {api_version!r}, {kind!r})"]
    loader = CRD_MODELS.get((api_version, kind))
    if loader is not None:
        return validate_crd(doc, loader(), prefix)
    validator = builtin_validator(api_version, kind)
    if validator is not None:
        return validate_builtin(doc, validator, prefix)
    known = sorted({k for _, k in CRD_MODELS})
    return [
        f"{prefix or '<root>'}: no validator covers apiVersion {api_version!r} kind {kind!r} "
        f"(not a Kubernetes {KUBE_VERSION} built-in; CRD kinds covered: {', '.join(known)})"
    ]


def validate_documents(docs: Iterable[Doc]) -> list[str]:
    """Schema errors of all documents, each prefixed with the document's Kind/name."""
    errors: list[str] = []
    for doc in docs:
        name = (doc.get("metadata") or {}).get("name")
        if not name:
            errors.append(f"{label(doc)}: metadata.name is missing")
        errors.extend(f"{label(doc)}: {error}" for error in validate_document(doc))
    return errors
