"""Prometheus recording rules and alerts for drift monitoring, built from the exporter's metric names.

Kept next to `metric_names` so that a renamed metric cannot leave an alert watching a series that no
longer exists; `rooivalk.monitoring.assets` writes them into the PrometheusRule and the Helm chart.
"""

from __future__ import annotations

import re
from typing import Any, Final

from rooivalk.monitoring import metric_names as m

ROWS_INGESTED_RATE_1M: Final = "rooivalk:rows_ingested:rate1m"
DATA_DRIFT_ALERT: Final = "RooivalkDataDrift"
STALE_CHECK_ALERT: Final = "RooivalkDriftCheckStale"

# A subset of Prometheus durations that Helm's template functions can also turn into seconds.
_DURATION = re.compile(r"(?:[0-9]+[smhdw])+")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_seconds(duration: str) -> int:
    """Seconds in a duration such as "30m" or "1h30m" (units s, m, h, d, w; no ms, no y)."""
    if not _DURATION.fullmatch(duration):
        raise ValueError(f"{duration!r} is not a duration like 30m or 1h30m (units s, m, h, d, w)")
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in re.findall(r"([0-9]+)([smhdw])", duration))


def _query_value(metric: str, humanize: str) -> str:
    """Alert-template text that prints `metric` for the alert's model, or nothing if it has no sample."""
    query = f'printf "max({metric}{{{m.MODEL}=%q}})" $labels.{m.MODEL} | query'
    return f"{{{{ with {query} }}}}{{{{ . | first | value | {humanize} }}}}{{{{ end }}}}"


def format_rule_groups(alert_for: str, stale_after: str, stale_seconds: str) -> dict[str, Any]:
    """The rule groups with the arguments inserted verbatim, unchecked: the Helm chart's template passes
    placeholders for its values here (`rooivalk.monitoring.assets`); everyone else wants
    `prometheus_rule_groups`."""
    share = _query_value(m.DRIFT_SHARE, "humanizePercentage")
    threshold = _query_value(m.DRIFT_THRESHOLD, "humanizePercentage")
    recording = {
        "name": "rooivalk-drift.recording",
        "rules": [
            {"record": ROWS_INGESTED_RATE_1M, "expr": f"sum by ({m.MODEL}) (rate({m.ROWS_INGESTED_TOTAL}[1m]))"},
        ],
    }
    data_drift = {
        "alert": DATA_DRIFT_ALERT,
        "expr": f"max by ({m.MODEL}) ({m.DRIFT_DETECTED}) == 1",
        "for": alert_for,
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "Data drift in the inputs of model {{ $labels.model }}",
            "description": (
                "The drift checks of model {{ $labels.model }} have flagged dataset drift "
                f"for at least {alert_for}: {share} of the columns drifted at the last check (threshold {threshold}). "
                "The monitor sends a retraining signal; the Rooivalk drift dashboard shows which features moved."
            ),
        },
    }
    # The age of the last check, not `changes()` over a window, so that a monitor that has just started
    # is not reported stale; a monitor that is gone (no series at all) is the scrape target's alert.
    stale = {
        "alert": STALE_CHECK_ALERT,
        "expr": f"time() - max by ({m.MODEL}) ({m.DRIFT_LAST_CHECK_TIMESTAMP}) > {stale_seconds}",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": f"No drift check of model {{{{ $labels.model }}}} for more than {stale_after}",
            "description": (
                "The last drift check of model {{ $labels.model }} was {{ $value | humanizeDuration }} ago "
                f"(allowed: {stale_after}), so drift in its inputs would go unnoticed. "
                "Is the monitor receiving batches, or rejecting them?"
            ),
        },
    }
    alerts = {"name": "rooivalk-drift.alerts", "rules": [data_drift, stale]}
    return {"groups": [recording, alerts]}


def prometheus_rule_groups(alert_for: str = "10m", stale_after: str = "30m") -> dict[str, Any]:
    """Recording rules and alerts as a rule file body ({"groups": [...]}), also a PrometheusRule spec.

    alert_for: how long the last checks must keep flagging drift before RooivalkDataDrift fires.
    stale_after: how old the last check may be before RooivalkDriftCheckStale fires; a few times the
    check interval, so that one slow or skipped check does not page anyone.
    """
    duration_seconds(alert_for)  # validates it
    return format_rule_groups(alert_for, stale_after, str(duration_seconds(stale_after)))
