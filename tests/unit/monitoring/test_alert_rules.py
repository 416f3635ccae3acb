"""The drift rules as shipped (kustomize base and rendered Helm chart) pass promtool's checks and its unit
test of when the alerts go pending and fire (drift_rules_test.yaml)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from rooivalk.monitoring import metric_names as m
from rooivalk.monitoring.alert_rules import prometheus_rule_groups
from rooivalk.monitoring.assets import RULE_PATH, RULE_SELECTOR_LABELS

from ._tools import REPO, helm_template, one, promtool_check_rules, run, tool

UNIT_TEST = Path(__file__).with_name("drift_rules_test.yaml")
SOURCES = ["kustomize", "helm"]


def shipped_rule(source: str) -> dict[str, Any]:
    """The PrometheusRule as checked in (kustomize base) or as `helm template` renders it by default."""
    if source == "kustomize":
        rule: dict[str, Any] = yaml.safe_load((REPO / RULE_PATH).read_text())
        return rule
    return one(helm_template(), "PrometheusRule")


@pytest.mark.parametrize("source", SOURCES)
def test_promtool_check_rules(source: str, tmp_path: Path) -> None:
    rule = shipped_rule(source)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == "rooivalk-drift"
    assert RULE_SELECTOR_LABELS.items() <= rule["metadata"]["labels"].items()
    assert list(rule["spec"]) == ["groups"]
    result = promtool_check_rules(rule["spec"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 3 rules found" in result.stdout


def test_promtool_check_rules_catches_a_broken_expression(tmp_path: Path) -> None:
    rules = prometheus_rule_groups()
    rules["groups"][1]["rules"][0]["expr"] = f"max by (model) ({m.DRIFT_DETECTED} == 1"
    assert promtool_check_rules(rules, tmp_path).returncode != 0


@pytest.mark.parametrize("source", SOURCES)
def test_promtool_unit_test_of_alerts_and_recording_rule(source: str, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(shipped_rule(source)["spec"]))
    shutil.copy(UNIT_TEST, tmp_path / UNIT_TEST.name)
    result = run(tool("promtool"), "test", "rules", UNIT_TEST.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_test_fails_when_the_for_window_changes(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(prometheus_rule_groups(alert_for="5m")))
    shutil.copy(UNIT_TEST, tmp_path / UNIT_TEST.name)
    result = run(tool("promtool"), "test", "rules", UNIT_TEST.name, cwd=tmp_path)
    assert result.returncode != 0


def test_helm_values_reach_the_rules() -> None:
    assert one(helm_template(), "PrometheusRule")["spec"] == prometheus_rule_groups()
    custom = helm_template("monitoring.alertFor=5m", "monitoring.staleAfter=1h30m")
    assert one(custom, "PrometheusRule")["spec"] == prometheus_rule_groups(alert_for="5m", stale_after="1h30m")
    # values.schema.json refuses a bad duration, naming the key, before the template's own check runs.
    for flag in ("--set", "--set-string"):
        result = run(tool("helm"), "template", "rooivalk", "helm/rooivalk", flag, "monitoring.staleAfter=30")
        assert result.returncode != 0
        assert "/monitoring/staleAfter" in result.stderr


def test_rules_read_only_exported_series() -> None:
    """A renamed metric must not leave a rule reading a series nobody exports."""
    groups = prometheus_rule_groups()["groups"]
    text = yaml.safe_dump(groups)
    used = set(re.findall(r"\brooivalk_[a-z0-9_]+", text))
    assert used, text
    assert used <= set(m.METRIC_LABELS), used - set(m.METRIC_LABELS)
