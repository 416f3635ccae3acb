"""Kubernetes label selectors, decided offline against the labels a pod template will carry."""

from __future__ import annotations

from typing import Any

from .pods import UNKNOWN


def matches(selector: dict[str, Any] | None, labels: dict[str, Any]) -> bool:
    """Whether a LabelSelector (matchLabels/matchExpressions) or a plain map (a Service's) selects labels.

    A label whose value the controller chooses at run time (UNKNOWN) satisfies only Exists/DoesNotExist.
    """
    if not selector:
        return True  # {} selects everything (NetworkPolicy podSelector: {})
    if "matchLabels" in selector or "matchExpressions" in selector:
        required = selector.get("matchLabels") or {}
        expressions = selector.get("matchExpressions") or []
    else:
        required, expressions = selector, []
    for key, value in required.items():
        if key not in labels or labels[key] is UNKNOWN or str(labels[key]) != str(value):
            return False
    return all(_expression(expr, labels) for expr in expressions)


def _expression(expr: dict[str, Any], labels: dict[str, Any]) -> bool:
    key, operator = expr.get("key"), expr.get("operator")
    values = {str(v) for v in expr.get("values") or []}
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    if key in labels and labels[key] is UNKNOWN:
        return False
    if operator == "In":
        return key in labels and str(labels[key]) in values
    if operator == "NotIn":
        return key not in labels or str(labels[key]) not in values
    return False  # an operator Kubernetes would reject
