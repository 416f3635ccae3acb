"""Strict schemas: every document the chart (each values file) and the overlays render validates, with any
unknown field at any depth an error; `helm lint --strict` passes for each values file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.k8s_validation import schema
from tests.deploy.k8s_validation.fixtures import FIXTURES, expectations, good, load, rendered
from tests.deploy.k8s_validation.render import Render, Target, ToolMissingError, all_targets, helm_lint, helm_targets

SCHEMA_FIXTURES = sorted((FIXTURES / "schema").glob("*.yaml"))


@pytest.fixture(scope="session", params=all_targets(), ids=lambda t: t.id)
def render(request: pytest.FixtureRequest) -> Render:
    target: Target = request.param
    return rendered(target)


def test_render_is_not_empty(render: Render) -> None:
    assert render.docs, f"{render.name} rendered no documents"


def test_render_validates_strictly(render: Render) -> None:
    errors = schema.validate_documents(render.docs)
    assert not errors, f"{render.name}:\n" + "\n".join(errors)


@pytest.mark.parametrize("values_file", [t.path for t in helm_targets()], ids=lambda p: p.name)
def test_helm_lint_strict(values_file: Path) -> None:
    try:
        result = helm_lint(values_file)
    except ToolMissingError as exc:
        pytest.skip(str(exc))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_good_fixture_validates() -> None:
    assert schema.validate_documents(good()) == []


@pytest.mark.parametrize("path", SCHEMA_FIXTURES, ids=lambda p: p.stem)
def test_a_planted_schema_mistake_is_reported_with_its_path(path: Path) -> None:
    expected = expectations(path)
    assert expected, f"{path.name} has no `# expect:` line"
    errors = schema.validate_documents(load(f"schema/{path.name}"))
    for substring in expected:
        assert any(substring in error for error in errors), f"{substring!r} not in {errors}"
    assert len(errors) == len(expected), f"expected only the planted mistakes, got {errors}"


def test_a_wrong_api_version_for_a_known_kind_is_an_error() -> None:
    doc = {"apiVersion": "argoproj.io/v1beta1", "kind": "Sensor", "metadata": {"name": "x"}, "spec": {}}
    assert schema.validate_documents([doc]) == [
        "Sensor/x: <root>: no validator covers apiVersion 'argoproj.io/v1beta1' kind 'Sensor' (not a Kubernetes "
        "1.30.0 built-in; CRD kinds covered: ClusterWorkflowTemplate, CronWorkflow, EventBus, EventSource, "
        "PodMonitor, PrometheusRule, Sensor, ServiceMonitor, Workflow, WorkflowTemplate)"
    ]


def test_a_document_without_a_name_is_an_error() -> None:
    errors = schema.validate_documents([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}])
    assert errors == ["ConfigMap/<unnamed>: metadata.name is missing"]
