"""Reading a plan: YAML files, `--set a.b=c` overrides, validation whose errors name the file and key path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rooivalk.plan.base import PlanError
from rooivalk.plan.detector_members import OVERRIDES_PATH, member_values, postprocess_problems, trained_digest
from rooivalk.plan.detector_members import override_problems as detector_override_problems
from rooivalk.plan.document import Plan
from rooivalk.plan.model_keys import attribution_problems, model_key_problems
from rooivalk.plan.parameter import restore_nulls
from rooivalk.plan.search import search_section_problems
from rooivalk.plan.section_checks import (
    cross_validation_objective_problems,
    cross_validation_problems,
    qat_export_problems,
    quantization_operators_problems,
)
from rooivalk.plan.techniques import PluginResolver, technique_problems
from rooivalk.plan.variants import is_image_plan, override_problems
from rooivalk.plan.variants import section_problems as variant_section_problems

Problem = tuple[str, str]  # (key path, reason)


def _error_problems(error: ValidationError, prefix: str = "") -> list[Problem]:
    problems = []
    for item in error.errors():
        path = prefix + ".".join(str(part) for part in item["loc"]) if item["loc"] else prefix.rstrip(".") or "<root>"
        problems.append((path, "unknown key" if item["type"] == "extra_forbidden" else item["msg"]))
    return problems


def _format_problems(problems: list[Problem], origin: str) -> str:
    return "\n".join([f"{origin}: {len(problems)} problem(s) in the plan", *(f"  {p}: {m}" for p, m in problems)])


def validate_plan(raw: dict[str, Any], origin: str = "<plan>", resolver: PluginResolver | None = None) -> Plan:
    """Validate a raw plan, then refuse every model and training key its model would not use
    (rooivalk.plan.model_keys, rooivalk.plan.techniques)."""
    plan, problems = _plan_problems(raw, origin, resolver)
    if plan is None or problems:
        raise PlanError(_format_problems(problems, origin))
    return plan


def _plan_problems(
    raw: dict[str, Any], origin: str, resolver: PluginResolver | None
) -> tuple[Plan | None, list[Problem]]:
    """(the plan, or None when its types do not validate; every problem with its key path)."""
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as error:
        return None, _error_problems(error)
    problems = model_key_problems(plan) + technique_problems(plan, resolver) + qat_export_problems(plan)
    problems += cross_validation_problems(plan) + cross_validation_objective_problems(plan)
    problems += quantization_operators_problems(plan)
    if plan.attribution is not None:  # checked as the table plan its step runs, its paths under attribution.
        try:
            attribution = plan.attribution_plan()
        except ValidationError as error:
            return None, _error_problems(error, prefix="attribution.")
        inner = model_key_problems(attribution) + technique_problems(attribution, resolver)
        inner += qat_export_problems(attribution)
        inner += attribution_problems(plan.attribution)
        problems += [(f"attribution.{path}", reason) for path, reason in inner]
    if plan.search is not None:
        problems += _search_space_problems(raw, plan, resolver)
    if plan.variants is not None:
        problems += _variant_problems(plan, origin, resolver)
    if _detector_ensemble_overrides(plan) is not None:
        problems += _detector_member_problems(plan, origin, resolver, set(problems))
    return plan, problems


def _variant_raw_plan(plan: Plan, overrides: dict[str, Any]) -> dict[str, Any]:
    """The raw plan of a variant: the resolved plan without `variants`, with the member's overrides set as
    `--set` sets them (a Plan, not its file, so that a training step rebuilds the members from its
    parameter alone)."""
    base = plan.to_parameter()
    base.pop("variants")
    return set_values(base, overrides)


def _variant_problems(plan: Plan, origin: str, resolver: PluginResolver | None) -> list[Problem]:
    """Each member must validate as a plan of its own, and differ from the others; paths under
    variants.members[k]."""
    assert plan.variants is not None
    problems = variant_section_problems(plan) + override_problems(plan.variants.members, is_image_plan(plan))
    if problems:
        return problems
    digests: dict[str, int] = {}
    for k, overrides in enumerate(plan.variants.members):
        where = f"variants.members[{k}]"
        try:
            member, inner = _plan_problems(_variant_raw_plan(plan, overrides), f"{origin} {where}", resolver)
        except PlanError as error:  # a path that does not lead anywhere (a list index out of range)
            problems.append((where, str(error)))
            continue
        problems += [(f"{where}.{path}", reason) for path, reason in inner]
        if member is None or inner:
            continue
        first = digests.setdefault(member.digest(), k)
        if first != k:
            problems.append((where, f"the same plan as member {first}: it would train the same model"))
    return problems


def variant_plans(plan: Plan, resolver: PluginResolver | None = None) -> list[Plan]:
    """The member plans of a plan's `variants`, in order, each validated (PlanError naming the member)."""
    if plan.variants is None:
        raise PlanError(f"plan {plan.name!r} has no 'variants' section")
    return [
        validate_plan(_variant_raw_plan(plan, overrides), f"{plan.name} variants.members[{k}]", resolver)
        for k, overrides in enumerate(plan.variants.members)
    ]


def _detector_ensemble_overrides(plan: Plan) -> list[dict[str, Any]] | None:
    detector = plan.model.detector if plan.model is not None else None
    return None if detector is None or detector.ensemble is None else detector.ensemble.overrides


def _detector_member_problems(
    plan: Plan, origin: str, resolver: PluginResolver | None, known: set[Problem]
) -> list[Problem]:
    """Each member of model.detector.ensemble must validate as a plan of its own and train a model the others
    do not (an overridden training.seed can make two alike); paths under model.detector.ensemble.overrides[k].
    The plan's own score_threshold / nms_iou may not be set where every member overrides them.
    `known`: the plan's own problems, which every member has too (not repeated)."""
    overrides = _detector_ensemble_overrides(plan)
    detector = plan.single_model.detector
    assert overrides is not None
    assert detector is not None
    problems = detector_override_problems(overrides)
    if problems:
        return problems
    problems = postprocess_problems(detector)
    digests: dict[str, int] = {}
    for k in range(len(overrides)):
        where = f"{OVERRIDES_PATH}[{k}]"
        try:
            raw = set_values(plan.to_parameter(), member_values(plan, k))
            member, inner = _plan_problems(raw, f"{origin} {where}", resolver)
        except PlanError as error:  # a path that does not lead anywhere (a list index out of range)
            problems.append((where, str(error)))
            continue
        problems += [(f"{where}.{path}", reason) for path, reason in inner if (path, reason) not in known]
        if member is None or inner:
            continue
        # Members that differ only in their post-process would train the same network twice.
        first = digests.setdefault(trained_digest(member, detector), k)
        if first != k:
            problems.append(
                (
                    where,
                    f"the same plan as member {first} (seed included, post-process aside): it would train the "
                    "same model",
                )
            )
    return problems


def detector_member_plan(plan: Plan, member: int, resolver: PluginResolver | None = None) -> Plan:
    """Member `member` of the plan's model.detector.ensemble as a plan of its own, validated (PlanError
    naming model.detector.ensemble.overrides[k]): rooivalk.plan.detector_members."""
    detector = plan.single_model.detector
    if detector is None or detector.ensemble is None:
        raise PlanError(f"plan {plan.name!r} has no model.detector.ensemble")
    raw = set_values(plan.to_parameter(), member_values(plan, member))
    return validate_plan(raw, f"{plan.name} {OVERRIDES_PATH}[{member}]", resolver)


def _search_space_problems(raw: dict[str, Any], plan: Plan, resolver: PluginResolver | None) -> list[Problem]:
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
