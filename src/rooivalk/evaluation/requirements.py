"""Each of the plan's requirements measured: its figure among a step's metrics and its verdict.

The evaluation steps add the per-class figures requirements ask for to their metrics
(`test_recall.drone`, from the report's per-class table), so that gates naming such a requirement
and the MLflow metrics see them too, and write every requirement's verdict into the evaluation
report. A figure that step does not produce (an export timing) is recorded as not measured there;
the registration measures every requirement again on the evaluation's and the export's figures
together (rooivalk.tracking.model_record).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rooivalk.plan import RequirementSpec
from rooivalk.plan.requirements import PER_CLASS_FIGURES, measure_requirements

__all__ = ["measure_requirements", "per_class_figures"]


def per_class_figures(
    requirements: list[RequirementSpec], per_class: Mapping[str, Mapping[str, Any]], prefix: str, where: str
) -> dict[str, float]:
    """The per-class figures the requirements ask for among `per_class` (class -> figure name -> value; the
    figures of a model whose metrics start with `prefix`: "test_" for the one model, "fusion_test_"),
    flat as `<metric>.<class>`. A class the model does not know is a plan error naming the requirement."""
    figures = {}
    for index, requirement in enumerate(requirements):
        if requirement.class_name is None or not requirement.metric.startswith(prefix):
            continue
        name = requirement.metric.removeprefix(prefix)
        if name not in PER_CLASS_FIGURES:
            continue
        if requirement.class_name not in per_class:
            raise ValueError(
                f"requirements[{index}].class_name: {requirement.class_name!r} is not a class of {where}; its "
                f"classes: {sorted(per_class)}"
            )
        value = per_class[requirement.class_name].get(name)
        if isinstance(value, int | float):
            figures[requirement.key] = float(value)
    return figures
