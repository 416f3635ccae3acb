"""`requirements:` the plan's ML requirements (ASPICE MLE.3), each with an id, a text and a measurable
criterion, so that evaluations, model versions and `rooivalk trace` can say which requirement a model
meets, with what figure.

A requirement's criterion is a figure of the run, named as gates name them (`test_accuracy`,
`fusion_test_accuracy`, a detector's `test_map50`, an export figure such as
`model_int8_static_latency_p95_ms`), with a lower and/or upper bound; with `class_name`, the figure of
one class (`test_recall` of class `drone`: the evaluation report's per-class table; a detector's
`test_ap50` per class). The split is the one the figure is measured on, named in it (`test_...`).
A gate may reference a requirement by id (`evaluation.gates: [{requirement: REQ-ACC}]`): its metric
and bounds are the requirement's (rooivalk.plan.document resolves them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, model_validator

from rooivalk.plan.base import Strict

# The per-class figures the evaluation reports: a classifier's per-class table, a detector's AP50.
PER_CLASS_FIGURES = ("precision", "recall", "f1", "false_positive_rate", "ap50")


class RequirementSpec(Strict):
    id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$", max_length=64, description="a stable id, e.g. REQ-ML-012")
    text: str = Field(min_length=1, description="what is required, as the requirements document says it")
    metric: str = Field(
        min_length=1,
        description="the figure that measures it, as gates name figures (test_accuracy, fusion_test_accuracy, "
        "test_map50, an export figure); with class_name a per-class figure: test_recall, test_precision, "
        "test_f1, test_false_positive_rate (fusion_test_... for the fusion model), a detector's test_ap50",
    )
    min: float | None = Field(None, description="the figure must be at least this")
    max: float | None = Field(None, description="the figure must be at most this")
    # The figure is logged to MLflow as <metric>.<class>: MLflow takes letters, digits, _ - . space : / in a
    # metric name, and a class name that is not a plain path segment would make the evaluate step fail.
    class_name: str | None = Field(
        None,
        pattern=r"^[\w\-. :]+$",
        description="the class whose figure is meant (letters, digits, _ - . : and spaces); null: the whole split",
    )

    @model_validator(mode="after")
    def _criterion(self) -> RequirementSpec:
        if self.min is None and self.max is None:
            raise ValueError(f"requirement {self.id}: give min or max (its measurable criterion)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"requirement {self.id}: min {self.min} > max {self.max}")
        if self.class_name in (".", ".."):
            raise ValueError(f"requirement {self.id}: class_name {self.class_name!r} is not a class name")
        if self.class_name is not None and not self.metric.endswith(PER_CLASS_FIGURES):
            raise ValueError(
                f"requirement {self.id}: class_name needs a per-class figure ({', '.join(PER_CLASS_FIGURES)}), "
                f"not {self.metric!r}"
            )
        return self

    @property
    def key(self) -> str:
        """The name of the measured figure among the run's metrics: the metric, or `<metric>.<class>`."""
        return self.metric if self.class_name is None else f"{self.metric}.{self.class_name}"

    @property
    def split(self) -> str | None:
        """The split the figure is measured on, as its name says (test, val), or None (export timings)."""
        parts = self.metric.split("_")
        return next((split for split in ("test", "val") if split in parts), None)

    def passes(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def criterion(self) -> str:
        """`test_recall.drone >= 0.95` (and `<= ...`)."""
        return f"{self.key} {bounds_text(self.min, self.max)}"


def bounds_text(low: float | None, high: float | None) -> str:
    """`>= 0.9`, `<= 20`, or both joined by `and`."""
    parts = [f">= {low:g}" if low is not None else "", f"<= {high:g}" if high is not None else ""]
    return " and ".join(part for part in parts if part)


def requirement_problems(requirements: list[RequirementSpec]) -> list[tuple[str, str]]:
    """Ids given twice, with the path of the second."""
    seen: dict[str, int] = {}
    problems = []
    for index, requirement in enumerate(requirements):
        if requirement.id in seen:
            problems.append(
                (f"requirements[{index}].id", f"{requirement.id!r} is also requirements[{seen[requirement.id]}]")
            )
        seen.setdefault(requirement.id, index)
    return problems


def measure_requirements(requirements: list[RequirementSpec], metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    """One record per requirement: what it asks, its figure among `metrics` and whether it passes (value and
    passed null when these metrics do not hold its figure)."""
    records = []
    for requirement in requirements:
        value = metrics.get(requirement.key)
        records.append(
            {
                "id": requirement.id,
                "text": requirement.text,
                "metric": requirement.metric,
                "class_name": requirement.class_name,
                "split": requirement.split,
                "min": requirement.min,
                "max": requirement.max,
                "value": None if value is None else float(value),
                "passed": None if value is None else requirement.passes(float(value)),
            }
        )
    return records
