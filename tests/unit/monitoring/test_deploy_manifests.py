"""The chart lints, the kustomize base renders, and both ship the dashboard ConfigMap Grafana's sidecar
loads; built-in kinds are validated against the Kubernetes schemas (kubernetes-validate)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rooivalk.monitoring.alert_rules import prometheus_rule_groups
from rooivalk.monitoring.assets import DASHBOARD_KEY
from rooivalk.monitoring.dashboard import grafana_dashboard

from ._tools import CHART, helm_template, kustomize_build, one, run, tool

# kubectl apply keeps the object in an annotation limited to 256 KiB in all.
MAX_DASHBOARD_BYTES = 256 * 1024


def check_dashboard_config_map(config_map: dict[str, Any]) -> None:
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert list(config_map["data"]) == [DASHBOARD_KEY]
    text = config_map["data"][DASHBOARD_KEY]
    assert json.loads(text) == grafana_dashboard()
    assert len(text.encode()) < MAX_DASHBOARD_BYTES


def test_helm_lint_strict() -> None:
    result = run(tool("helm"), "lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_helm_renders_the_rule_and_the_dashboard() -> None:
    docs = helm_template()
    assert sorted(doc["kind"] for doc in docs) == ["ConfigMap", "PrometheusRule"]
    config_map = one(docs, "ConfigMap")
    check_dashboard_config_map(config_map)
    assert config_map["metadata"]["name"] == "rooivalk-drift-dashboard"
    labels = config_map["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "rooivalk"
    assert labels["app.kubernetes.io/managed-by"] == "Helm"
    other_label = one(helm_template("monitoring.dashboardLabel.grafana_dashboard=drift"), "ConfigMap")
    assert other_label["metadata"]["labels"]["grafana_dashboard"] == "drift"


def test_helm_monitoring_disabled_renders_nothing() -> None:
    assert helm_template("monitoring.enabled=false") == []


def test_kustomize_renders_the_rule_and_a_labelled_dashboard_config_map() -> None:
    docs = kustomize_build()
    config_map = one(docs, "ConfigMap")
    assert config_map["metadata"]["name"] == "rooivalk-drift-dashboard"  # no hash suffix
    check_dashboard_config_map(config_map)
    rule = one(docs, "PrometheusRule")
    assert rule["spec"] == prometheus_rule_groups()
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "rooivalk"


@pytest.mark.parametrize("render", [helm_template, kustomize_build], ids=["helm", "kustomize"])
def test_builtin_kinds_are_valid_kubernetes(render: Any) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is missing: it is in the dev extra (`make setup` installs it)")
    version = kubernetes_validate.latest_version()
    builtin = [doc for doc in render() if not doc["apiVersion"].startswith("monitoring.coreos.com/")]
    assert builtin
    for doc in builtin:
        kubernetes_validate.validate(doc, version, strict=True)
    # The validator is strict here: an unknown field fails (CRD kinds it cannot check are left to promtool).
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**builtin[0], "spec": {}}, version, strict=True)
