"""The Grafana dashboard, checked without a Grafana server: its structure, the series it reads, and its
PromQL parsed by promtool (each target as a recording rule)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from rooivalk.monitoring import metric_names as m
from rooivalk.monitoring.alert_rules import DATA_DRIFT_ALERT, ROWS_INGESTED_RATE_1M, prometheus_rule_groups
from rooivalk.monitoring.dashboard import DATASOURCE, grafana_dashboard

from ._tools import promtool_check_rules

# Grafana variables in the targets, replaced by what Grafana would put there.
VARIABLES = {"model": ".*", "__rate_interval": "5m"}


def targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [target for panel in dashboard["panels"] for target in panel["targets"]]


def substitute(expr: str) -> str:
    """`$model`, `${model}`, `$__rate_interval` -> literals; an unknown variable fails the test."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in VARIABLES, f"unknown dashboard variable ${name} in {expr}"
        return VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def test_dashboard_identity_and_variables() -> None:
    dashboard = grafana_dashboard()
    assert dashboard["uid"] == "rooivalk-drift"
    assert dashboard["title"] == "Rooivalk drift"
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["model"]["type"] == "query"
    assert variables["model"]["datasource"] == DATASOURCE == {"type": "prometheus", "uid": "${datasource}"}
    assert variables["model"]["query"] == f"label_values({m.DRIFT_SHARE}, {m.MODEL})"
    assert variables["model"]["includeAll"]
    assert variables["model"]["allValue"] == ".*"


def test_every_panel_has_id_position_datasource_and_targets() -> None:
    panels = grafana_dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(set(ids)) == len(ids)
    assert all(isinstance(panel_id, int) for panel_id in ids)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["title"]
        assert panel["type"] in {"timeseries", "stat", "state-timeline"}
        assert panel["datasource"] == DATASOURCE
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys()
        assert grid["x"] + grid["w"] <= 24
        cell = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & cell, f"panel {panel['title']!r} overlaps another"
        cells |= cell
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids)
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE
            assert target["expr"]
            assert target["legendFormat"]


def test_required_panels_are_there() -> None:
    exprs = [target["expr"] for target in targets(grafana_dashboard())]

    def has(*parts: str) -> bool:
        return any(all(part in expr for part in parts) for expr in exprs)

    assert has(m.DRIFT_SHARE)
    assert has(m.DRIFT_THRESHOLD)
    assert has(m.FEATURE_DRIFT_SCORE, m.FEATURE)
    assert has("ALERTS", f'alertname="{DATA_DRIFT_ALERT}"')
    assert has(ROWS_INGESTED_RATE_1M, "* 60")
    assert has("histogram_quantile(0.99", f"{m.DRIFT_CHECK_DURATION}_bucket")
    assert has(m.BATCHES_REJECTED_TOTAL, m.REASON)


def test_targets_read_exported_series_filtered_by_model() -> None:
    rules = prometheus_rule_groups()["groups"]
    recorded = {rule["record"] for group in rules for rule in group["rules"] if "record" in rule}
    alerts = {rule["alert"] for group in rules for rule in group["rules"] if "alert" in rule}
    histogram = {m.DRIFT_CHECK_DURATION + suffix for suffix in ("_bucket", "_sum", "_count")}
    known = set(m.METRIC_LABELS) | histogram | recorded
    for target in targets(grafana_dashboard()):
        expr = target["expr"]
        used = set(re.findall(r"\brooivalk[_:][a-z0-9_:]+", expr))
        alert_names = set(re.findall(r'ALERTS\{alertname="(\w+)"', expr))
        assert used | alert_names, expr
        assert used <= known, f"{expr} reads {used - known}"
        assert alert_names <= alerts, expr
        assert f'{m.MODEL}=~"$model"' in expr, expr


def test_every_target_parses_with_promtool(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:panel_{panel['id']}:{target['refId']}", "expr": substitute(target["expr"])}
        for panel in grafana_dashboard()["panels"]
        for target in panel["targets"]
    ]
    result = promtool_check_rules({"groups": [{"name": "dashboard", "rules": rules}]}, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_variable_substitution_fails_on_unknown_variables() -> None:
    assert substitute('x{model=~"${model}"}[$__rate_interval]') == 'x{model=~".*"}[5m]'
    with pytest.raises(AssertionError, match="unknown dashboard variable"):
        substitute("rate(x[$__interval])")
