"""Workflow parameters: what a Workflow declares, what its templates use, what a Sensor trigger patches in.

Argo semantics the checks follow: `{{workflow.parameters.X}}` reads spec.arguments.parameters X anywhere;
the entrypoint template's inputs are filled from the arguments of the same name; a Sensor trigger parameter
writes its value at an sjson `dest` path of the resource it submits.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .pods import sensor_workflows
from .render import Doc
from .schema import label

Docs = tuple[Doc, ...] | list[Doc]
WORKFLOW_PARAM = re.compile(r"\{\{\s*workflow\.parameters\.([A-Za-z0-9_.-]+?)\s*\}\}")


def _workflow_template(docs: Docs, name: str | None) -> Doc | None:
    return next(
        (d for d in docs if d.get("kind") == "WorkflowTemplate" and (d.get("metadata") or {}).get("name") == name),
        None,
    )


def workflow_specs(docs: Docs) -> list[tuple[str, str, dict[str, Any]]]:
    """(owner, path, spec) of every Workflow spec: Workflows, WorkflowTemplates, CronWorkflows, triggers."""
    specs = []
    for doc in docs:
        kind = doc.get("kind")
        if kind in ("Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate"):
            specs.append((label(doc), "spec", doc.get("spec") or {}))
        elif kind == "CronWorkflow":
            specs.append((label(doc), "spec.workflowSpec", (doc.get("spec") or {}).get("workflowSpec") or {}))
        elif kind == "Sensor":
            for path, workflow in sensor_workflows(doc):
                specs.append((label(doc), f"{path}.spec", workflow.get("spec") or {}))
    return specs


def _declared(spec: dict[str, Any]) -> list[str]:
    params = (spec.get("arguments") or {}).get("parameters") or []
    return [str(p.get("name")) for p in params if isinstance(p, dict)]


def _global_refs(spec: dict[str, Any]) -> set[str]:
    """Names X of every `{{workflow.parameters.X}}` outside the arguments that declare them."""
    body = {k: v for k, v in spec.items() if k != "arguments"}
    return set(WORKFLOW_PARAM.findall(json.dumps(body)))


def _entry_inputs(spec: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(used, required) input parameters of the entrypoint template.

    Argo passes the workflow's arguments to the entrypoint template's inputs of the same name, so an input
    the entrypoint uses (`{{inputs.parameters.X}}`) is a use of workflow parameter X, and an input without
    a value or default must be supplied by the arguments.
    """
    entry = next(
        (t for t in spec.get("templates") or [] if isinstance(t, dict) and t.get("name") == spec.get("entrypoint")),
        None,
    )
    if entry is None:
        return set(), set()
    body = json.dumps({k: v for k, v in entry.items() if k != "inputs"})
    used, required = set(), set()
    for param in (entry.get("inputs") or {}).get("parameters") or []:
        name = str((param or {}).get("name"))
        if re.search(r"\{\{\s*inputs\.parameters\." + re.escape(name) + r"\s*\}\}", body):
            used.add(name)
        if not any(k in param for k in ("value", "default", "valueFrom")):
            required.add(name)
    return used, required


def _usage(spec: dict[str, Any], docs: Docs) -> tuple[set[str], set[str], set[str], set[str]]:
    """(declared, referenced as workflow.parameters, used at all, required by the entrypoint) of a spec,
    together with the WorkflowTemplate it references when that is rendered."""
    specs = [spec]
    ref = (spec.get("workflowTemplateRef") or {}).get("name")
    template = _workflow_template(docs, ref)
    if template is not None:
        specs.append(template.get("spec") or {})
    declared, refs, used, required = set(), set(), set(), set()
    for one in specs:
        entry_used, entry_required = _entry_inputs(one)
        declared |= set(_declared(one))
        refs |= _global_refs(one)
        used |= _global_refs(one) | entry_used
        required |= entry_required
    return declared, refs, used, required


def workflow_parameters(docs: Docs) -> list[str]:
    """Workflow parameters and their uses agree: `{{workflow.parameters.X}}` and the entrypoint's required
    inputs are declared in spec.arguments.parameters, and every declared parameter is used."""
    errors = []
    for owner, path, spec in workflow_specs(docs):
        declared, refs, used, required = _usage(spec, docs)
        for name in sorted(refs - declared):
            errors.append(f"{owner}: {path}: uses {{{{workflow.parameters.{name}}}}} but arguments.parameters lacks it")
        for name in sorted(required - declared):
            errors.append(
                f"{owner}: {path}: the entrypoint template needs input {name!r}, which arguments.parameters "
                "does not supply"
            )
        if spec.get("workflowTemplateRef"):
            continue  # its own declarations are the template's to use; checked on the WorkflowTemplate
        for name in _declared(spec):
            if name not in used:
                errors.append(
                    f"{owner}: {path}.arguments.parameters: {name!r} is declared but unused (no "
                    f"{{{{workflow.parameters.{name}}}}}, nor {{{{inputs.parameters.{name}}}}} in the entrypoint)"
                )
    return errors


def split_dest(dest: str) -> list[str]:
    """An sjson path (`spec.arguments.parameters.0.value`, `\\.` escapes a dot) as segments."""
    return [part.replace("\0", ".") for part in dest.replace("\\.", "\0").split(".")]


def resolve_dest(obj: Any, dest: str) -> str | None:
    """None when the path exists in obj (or appends with a final -1); else what is missing."""
    parts = split_dest(dest)
    for depth, part in enumerate(parts):
        at = ".".join(parts[:depth]) or "<root>"
        if isinstance(obj, list):
            if part == "-1" and depth == len(parts) - 1:
                return None
            if not part.isdigit() or int(part) >= len(obj):
                return f"{at} has no item {part} (it has {len(obj)})"
            obj = obj[int(part)]
        elif isinstance(obj, dict):
            if part not in obj:
                return f"{at} has no key {part!r}"
            obj = obj[part]
        else:
            return f"{at} is a scalar, it has no {part!r}"
    return None


def trigger_parameters(docs: Docs) -> list[str]:
    """Each trigger parameter's dest exists in the resource it patches; a Workflow argument dest is used."""
    errors = []
    for sensor in (d for d in docs if d.get("kind") == "Sensor"):
        for index, trigger in enumerate((sensor.get("spec") or {}).get("triggers") or []):
            template = (trigger or {}).get("template") or {}
            targets: list[tuple[str, Any, list[Any]]] = [
                (f"spec.triggers[{index}].parameters", template, (trigger or {}).get("parameters") or [])
            ]
            for key in ("argoWorkflow", "k8s"):
                body = template.get(key) or {}
                resource = (body.get("source") or {}).get("resource")
                if body.get("parameters"):
                    targets.append((f"spec.triggers[{index}].template.{key}.parameters", resource, body["parameters"]))
            for path, target, params in targets:
                for pindex, param in enumerate(params):
                    errors += _check_dest(
                        sensor, f"{path}[{pindex}].dest", target, str((param or {}).get("dest")), docs
                    )
    return errors


def _check_dest(sensor: Doc, where: str, target: Any, dest: str, docs: Docs) -> list[str]:
    if not isinstance(target, dict):
        return [f"{label(sensor)}: {where}: no inline resource to patch {dest!r} into"]
    missing = resolve_dest(target, dest)
    if missing:
        return [f"{label(sensor)}: {where}: {dest!r} does not exist in the resource ({missing})"]
    parts = split_dest(dest)
    if target.get("kind") == "Workflow" and parts[:3] == ["spec", "arguments", "parameters"] and len(parts) > 3:
        spec = target.get("spec") or {}
        if parts[3].isdigit():
            name = _declared(spec)[int(parts[3])]
            if name not in _usage(spec, docs)[2]:
                return [f"{label(sensor)}: {where}: sets Workflow parameter {name!r}, which the Workflow never uses"]
    return []
