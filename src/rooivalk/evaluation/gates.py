"""Validation gates: named metrics with bounds, checked the same way at every step."""

from __future__ import annotations

from typing import Any

from rooivalk.plan import Gate


class GateFailure(RuntimeError):
    """One or more gates failed; the message lists each failing metric with its value and bound."""


def check_gates(gates: list[Gate], metrics: dict[str, float], missing_fails: bool = False) -> list[dict[str, Any]]:
    """One {metric, value, min, max, passed} per gate.

    A gate on a metric the step does not produce is a plan error (KeyError naming the available
    metrics), unless `missing_fails`: then it fails, for metrics that exist only for some settings
    (a variant's metrics when export.precisions leaves it out or it could not be built).
    """
    results = []
    for gate in gates:
        if gate.metric not in metrics and not missing_fails:
            raise KeyError(f"gate metric {gate.metric!r} is not produced by this step; available: {sorted(metrics)}")
        value = metrics.get(gate.metric)
        passed = (
            value is not None and (gate.min is None or value >= gate.min) and (gate.max is None or value <= gate.max)
        )
        results.append({"metric": gate.metric, "value": value, "min": gate.min, "max": gate.max, "passed": passed})
    return results


def describe_failures(results: list[dict[str, Any]]) -> str:
    failing = []
    for r in results:
        if r["passed"]:
            continue
        bound = " and ".join(
            part
            for part in (
                f">= {r['min']}" if r["min"] is not None else "",
                f"<= {r['max']}" if r["max"] is not None else "",
            )
            if part
        )
        shown = "not measured" if r["value"] is None else f"{r['value']:.4f}"
        failing.append(f"{r['metric']} = {shown} (needs {bound})")
    return "; ".join(failing)
