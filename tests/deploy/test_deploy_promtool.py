"""promtool check rules on the rule groups of every rendered PrometheusRule."""

from __future__ import annotations

import pytest

from tests.deploy.k8s_validation import promtool
from tests.deploy.k8s_validation.fixtures import edit, good, rendered
from tests.deploy.k8s_validation.render import Doc, Render, Target, ToolMissingError, all_targets


@pytest.fixture(scope="session", params=all_targets(), ids=lambda t: t.id)
def render(request: pytest.FixtureRequest) -> Render:
    target: Target = request.param
    return rendered(target)


def _check(docs: list[Doc] | tuple[Doc, ...]) -> list[str]:
    try:
        return promtool.check_rules(docs)
    except ToolMissingError as exc:
        pytest.skip(str(exc))


def test_rendered_rules_pass_promtool(render: Render) -> None:
    if not any(d.get("kind") == "PrometheusRule" for d in render.docs):
        pytest.skip(f"{render.name} renders no PrometheusRule")
    assert _check(render.docs) == []


def test_the_good_fixture_rules_pass_promtool() -> None:
    assert _check(good()) == []


def test_a_broken_expression_fails_promtool() -> None:
    broken = "max by (model) (rooivalk_drift_detected == 1"
    errors = _check(edit(good(), "PrometheusRule", "rooivalk-drift", "spec.groups[0].rules[0].expr", broken))
    assert len(errors) == 1, errors
    assert errors[0].startswith("PrometheusRule/rooivalk-drift: promtool check rules failed:"), errors


def test_a_bad_for_duration_fails_promtool() -> None:
    errors = _check(edit(good(), "PrometheusRule", "rooivalk-drift", "spec.groups[0].rules[0].for", "10 minutes"))
    assert len(errors) == 1, errors
