"""The "Rooivalk drift" Grafana dashboard, built from the exporter's metric names and the alert rules.

No Grafana server runs in development or CI, so the tests check the JSON's structure and parse every
panel's PromQL with promtool (docs/monitoring.md).
"""

from __future__ import annotations

from typing import Any, Final

from rooivalk.monitoring import metric_names as m
from rooivalk.monitoring.alert_rules import DATA_DRIFT_ALERT, ROWS_INGESTED_RATE_1M, STALE_CHECK_ALERT

DASHBOARD_UID: Final = "rooivalk-drift"


# Panels and queries read the Prometheus the `datasource` variable names.
DATASOURCE: Final = {"type": "prometheus", "uid": "${datasource}"}
_LEGEND: Final = {"displayMode": "list", "placement": "bottom", "showLegend": True}


def _panel(
    kind: str,
    title: str,
    description: str,
    targets: list[tuple[str, str]],
    unit: str = "short",
    defaults: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A panel; targets are (PromQL, legend) pairs. `grafana_dashboard` assigns ids and positions."""
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit, **(defaults or {})}, "overrides": overrides or []},
        "options": options or {"legend": _LEGEND},
        "targets": [
            {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "range": True, "refId": chr(65 + index)}
            for index, (expr, legend) in enumerate(targets)
        ],
    }


def _panels() -> list[dict[str, Any]]:
    def sel(metric: str) -> str:
        return f'{metric}{{{m.MODEL}=~"$model"}}'

    by_model = f"by ({m.MODEL})"
    # 2 while firing, 1 while pending: one series per model that a state timeline maps to colours.
    alerts = 'ALERTS{{alertname="{}", alertstate="{}", {}=~"$model"}}'
    firing, pending = (alerts.format(DATA_DRIFT_ALERT, state, m.MODEL) for state in ("firing", "pending"))
    dashed = {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}}
    return [
        _panel(
            "timeseries",
            "Drift share",
            "Share of drifted columns at each check (solid) against the plan's threshold (dashed).",
            [
                (f"max {by_model} ({sel(m.DRIFT_SHARE)})", "{{model}}"),
                (f"max {by_model} ({sel(m.DRIFT_THRESHOLD)})", "{{model}} threshold"),
            ],
            unit="percentunit",
            defaults={"min": 0, "max": 1},
            overrides=[{"matcher": {"id": "byRegexp", "options": ".* threshold"}, "properties": [dashed]}],
        ),
        _panel(
            "state-timeline",
            f"{DATA_DRIFT_ALERT} alert",
            "Pending while the checks flag drift for less than the rule's `for:`, then firing.",
            [(f"max {by_model} ({firing} * 2 or {pending})", "{{model}}")],
            defaults={
                "mappings": [
                    {
                        "type": "value",
                        "options": {
                            "1": {"text": "pending", "color": "yellow", "index": 0},
                            "2": {"text": "firing", "color": "red", "index": 1},
                        },
                    }
                ],
                "noValue": "not firing",
            },
            options={"showValue": "never", "legend": _LEGEND},
        ),
        _panel(
            "timeseries",
            "Feature drift scores",
            "Per-feature score of the drift test at the last check.",
            [(f"max by ({m.MODEL}, {m.FEATURE}) ({sel(m.FEATURE_DRIFT_SCORE)})", "{{model}} {{feature}}")],
        ),
        _panel(
            "timeseries",
            "Drifted features",
            "Features whose test flagged drift at the last check, out of all features checked.",
            [
                (f"sum {by_model} ({sel(m.FEATURE_DRIFTED)})", "{{model}} drifted"),
                (f"count {by_model} ({sel(m.FEATURE_DRIFTED)})", "{{model}} checked"),
            ],
        ),
        _panel(
            "timeseries",
            "Rows ingested per minute",
            f"From the recording rule {ROWS_INGESTED_RATE_1M} (rows per second over 1m) times 60.",
            [(f"sum {by_model} ({sel(ROWS_INGESTED_RATE_1M)}) * 60", "{{model}}")],
        ),
        _panel(
            "timeseries",
            "Rows in the current window",
            "Rows the next drift check will compare against the reference.",
            [(f"max {by_model} ({sel(m.WINDOW_ROWS)})", "{{model}}")],
        ),
        _panel(
            "timeseries",
            "Drift check duration p99",
            "99th percentile of the time one drift check takes.",
            [
                (
                    f"histogram_quantile(0.99, sum by ({m.MODEL}, le) "
                    f"(rate({sel(m.DRIFT_CHECK_DURATION + '_bucket')}[$__rate_interval])))",
                    "{{model}}",
                )
            ],
            unit="s",
        ),
        _panel(
            "stat",
            "Time since last check",
            f"{STALE_CHECK_ALERT} fires above its limit (Helm value monitoring.staleAfter, 30m by default).",
            [(f"time() - max {by_model} ({sel(m.DRIFT_LAST_CHECK_TIMESTAMP)})", "{{model}}")],
            unit="s",
            options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        ),
        _panel(
            "timeseries",
            "Rejected batches per minute",
            "Batches the monitor refused (schema, size, ...), by reason.",
            [
                (
                    f"sum by ({m.MODEL}, {m.REASON}) (rate({sel(m.BATCHES_REJECTED_TOTAL)}[$__rate_interval])) * 60",
                    "{{model}} {{reason}}",
                )
            ],
        ),
        _panel(
            "timeseries",
            "Retraining signals per hour",
            "Retraining events the monitor sent, or failed to send, after detecting drift.",
            [
                (
                    f"sum by ({m.MODEL}, {m.OUTCOME}) (increase({sel(m.RETRAIN_EVENTS_TOTAL)}[1h]))",
                    "{{model}} {{outcome}}",
                )
            ],
        ),
    ]


def grafana_dashboard() -> dict[str, Any]:
    """The "Rooivalk drift" dashboard: two panels a row, a `model` and a `datasource` variable.

    The datasource is a variable rather than a fixed uid so that the same JSON works in any Grafana
    that has a Prometheus datasource, which is what a sidecar-provisioned dashboard needs.
    """
    panels = _panels()
    for index, panel in enumerate(panels):
        panel["id"] = index + 1
        panel["gridPos"] = {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)}
    model_query = f"label_values({m.DRIFT_SHARE}, {m.MODEL})"
    datasource_var = {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"}
    model_var = {
        "name": "model",
        "label": "Model",
        "type": "query",
        "datasource": DATASOURCE,
        "query": model_query,
        "definition": model_query,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "refresh": 2,  # on time range change: models come and go
        "sort": 1,
    }
    return {
        "uid": DASHBOARD_UID,
        "title": "Rooivalk drift",
        "description": "Data drift of deployed Rooivalk models, from the metrics of `rooivalk monitor serve`.",
        "tags": ["rooivalk", "drift"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "1m",
        "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": [datasource_var, model_var]},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }
