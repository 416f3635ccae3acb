"""Validation gates: named metrics with bounds, checked the same way at every step."""

from __future__ import annotations

from typing import Any

from rooivalk.plan import Gate


class GateFailure(RuntimeError):
    """One or more gates failed; the message lists each failing metric with its value and bound."""


def check_gates(gates: list[Gate], metrics: dict[str, float]) -> list[dict[str, Any]]:
    results = []
    for gate in gates:
        if gate.metric not in metrics:
            raise KeyError(f"gate metric {gate.metric!r} is not produced by this step; available: {sorted(metrics)}")
        value = metrics[gate.metric]
        passed = (gate.min is None or value >= gate.min) and (gate.max is None or value <= gate.max)
        results.append({"metric": gate.metric, "value": value, "min": gate.min, "max": gate.max, "passed": passed})
    return results


def describe_failures(results: list[dict[str, Any]]) -> str:
    failing = []
    for r in results:
        if r["passed"]:
            continue
        bound = " and ".join(
            part for part in (f">= {r['min']}" if r["min"] is not None else "", f"<= {r['max']}" if r["max"] is not None else "") if part
        )
        failing.append(f"{r['metric']} = {r['value']:.4f} (needs {bound})")
    return "; ".join(failing)
