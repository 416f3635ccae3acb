"""Reading a plan: YAML files, `--set a.b=c` overrides, validation whose errors name the file and key path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rooivalk.plan.base import PlanError
from rooivalk.plan.document import Plan
from rooivalk.plan.model_keys import attribution_problems, model_key_problems
from rooivalk.plan.parameter import restore_nulls
from rooivalk.plan.search import search_section_problems
from rooivalk.plan.section_checks import (
    cross_validation_objective_problems,
    cross_validation_problems,
    qat_export_problems,
)
from rooivalk.plan.techniques import PluginResolver, technique_problems


def _format_errors(error: ValidationError, origin: str, prefix: str = "") -> str:
    problems = []
    for item in error.errors():
        path = prefix + ".".join(str(part) for part in item["loc"]) if item["loc"] else prefix.rstrip(".") or "<root>"
        problems.append((path, "unknown key" if item["type"] == "extra_forbidden" else item["msg"]))
    return _format_problems(problems, origin)


def _format_problems(problems: list[tuple[str, str]], origin: str) -> str:
    return "\n".join([f"{origin}: {len(problems)} problem(s) in the plan", *(f"  {p}: {m}" for p, m in problems)])


def validate_plan(raw: dict[str, Any], origin: str = "<plan>", resolver: PluginResolver | None = None) -> Plan:
    """Validate a raw plan, then refuse every model and training key its model would not use
    (rooivalk.plan.model_keys, rooivalk.plan.techniques)."""
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as error:
        raise PlanError(_format_errors(error, origin)) from None
    problems = model_key_problems(plan) + technique_problems(plan, resolver) + qat_export_problems(plan)
    problems += cross_validation_problems(plan) + cross_validation_objective_problems(plan)
    if plan.attribution is not None:  # checked as the table plan its step runs, its paths under attribution.
        try:
            attribution = plan.attribution_plan()
        except ValidationError as error:
            raise PlanError(_format_errors(error, origin, prefix="attribution.")) from None
        inner = model_key_problems(attribution) + technique_problems(attribution, resolver)
        inner += qat_export_problems(attribution)
        inner += attribution_problems(plan.attribution)
        problems += [(f"attribution.{path}", reason) for path, reason in inner]
    if plan.search is not None:
        problems += _search_space_problems(raw, plan, resolver)
    if problems:
        raise PlanError(_format_problems(problems, origin))
    return plan


def _search_space_problems(raw: dict[str, Any], plan: Plan, resolver: PluginResolver | None) -> list[tuple[str, str]]:
    """Each searched key must exist and take each of its choices (and both range ends) in this plan."""
    assert plan.search is not None
    problems = search_section_problems(plan)
    if problems:
        return problems
    base = {key: value for key, value in raw.items() if key != "search"}
    for path, parameter in plan.search.space.items():
        values = parameter.choices if parameter.choices is not None else [parameter.low, parameter.high]
        for value in values:
            try:
                validate_plan(set_values(base, {path: value}), f"search.space.{path}", resolver)
            except PlanError as error:
                problems.append((f"search.space.{path}", f"{value!r}: {' '.join(str(error).split())}"))
                break
    return problems


def _parse_scalar(text: str) -> Any:
    # YAML scalars: 1e-3 -> float, true -> bool, null -> None, [a, b] -> list.
    return yaml.safe_load(text) if text.strip() else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides to a raw plan dict (a new dict; values parsed as YAML)."""
    result: dict[str, Any] = json.loads(json.dumps(raw))
    for override in overrides:
        if "=" not in override:
            raise PlanError(f"--set {override!r}: expected key.path=value")
        path, _, value = override.partition("=")
        keys = path.strip().split(".")
        node: Any = result
        for key in keys[:-1]:
            node = _child(node, key, path)
        if isinstance(node, list):
            node[_list_index(node, keys[-1], path)] = _parse_scalar(value)
        else:
            node[keys[-1]] = _parse_scalar(value)
    return result


def set_values(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of a raw plan (a parameter dict's NULLS_KEY applied first) with each value set at its dotted
    path as it is (no YAML re-parsing: 1e-05 stays a float), as `--set path=value` reaches it."""
    result: dict[str, Any] = json.loads(json.dumps(restore_nulls(raw)))
    for path, value in values.items():
        keys = path.split(".")
        node: Any = result
        for key in keys[:-1]:
            node = _child(node, key, path)
        if isinstance(node, list):
            node[_list_index(node, keys[-1], path)] = value
        else:
            node[keys[-1]] = value
    return result


def _list_index(node: list[Any], key: str, path: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise PlanError(f"--set {path}: {key!r} is not an index of a list of {len(node)}")
    return int(key)


def _child(node: Any, key: str, path: str) -> Any:
    """The mapping or list under `key` (a list takes an index: training.stages.0.epochs), made if missing."""
    if isinstance(node, list):
        child = node[_list_index(node, key, path)]
    else:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
    if not isinstance(child, dict | list):
        raise PlanError(f"--set {path}: {key!r} is not a mapping or a list")
    return child


def read_plan_file(path: str | Path) -> dict[str, Any]:
    plan_path = Path(path)
    if not plan_path.is_file():
        raise PlanError(f"{plan_path}: plan file not found")
    try:
        raw = yaml.safe_load(plan_path.read_text())
    except yaml.YAMLError as error:
        raise PlanError(f"{plan_path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise PlanError(f"{plan_path}: a plan must be a YAML mapping at the top level")
    return raw


def load_plan(path: str | Path, overrides: list[str] | None = None, resolver: PluginResolver | None = None) -> Plan:
    """Read, override and validate a plan file; errors name the file and the key path."""
    raw = apply_overrides(read_plan_file(path), overrides or [])
    return validate_plan(raw, origin=str(path), resolver=resolver)


def plan_json_schema() -> dict[str, Any]:
    return Plan.model_json_schema()
