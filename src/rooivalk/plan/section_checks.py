"""Checks of keys against another section of the plan: a key one section sets that another makes void.

`rooivalk validate` refuses these with the key's path, like the per-model checks of
rooivalk.plan.model_keys and rooivalk.plan.techniques.
"""

from __future__ import annotations

from rooivalk.plan.data import DETECTION_FORMATS
from rooivalk.plan.document import Plan
from rooivalk.plan.evaluation import CV_METRICS


def qat_export_problems(plan: Plan) -> list[tuple[str, str]]:
    """training.qat fine-tunes a model for static INT8: refused where the export builds no int8_static variant
    of that model, since the QAT weights would then ship as plain FP32 for nothing."""
    sections = (
        [("training", "model", plan.training)]
        if plan.sensors is None
        else [(f"sensors.{name}.training", name, sensor.training) for name, sensor in plan.sensors.items()]
        + ([("fusion.training", "fusion", plan.fusion.training)] if plan.fusion is not None else [])
    )
    return [
        (
            f"{path}.qat",
            f"the export builds no int8_static variant of {name!r} (export.precisions, export.models.{name}."
            "precisions), and QAT trains a model for static INT8",
        )
        for path, name, training in sections
        if training.qat is not None and "int8_static" not in (plan.export.for_model(name).precisions or [])
    ]


def cross_validation_problems(plan: Plan) -> list[tuple[str, str]]:
    """evaluation.cross_validation trains the fold models of sequence, table and image plans, in one process."""
    cv = plan.evaluation.cross_validation
    if cv is None:
        return []
    if plan.sensors is not None or plan.data.format in DETECTION_FORMATS:
        kind = "multi-sensor" if plan.sensors is not None else "detection"
        return [
            (
                "evaluation.cross_validation",
                f"applies to sequence, table and image classifier plans, not {kind} plans (they train once on "
                "their splits)",
            )
        ]
    distributed = plan.training.distributed
    if distributed.processes > 1:
        return [
            (
                "evaluation.cross_validation",
                "its fold models train in one process; training.distributed asks for several",
            )
        ]
    return []


def cross_validation_objective_problems(plan: Plan) -> list[tuple[str, str]]:
    """A search over a cross-validated plan scores each trial by a fold mean (cv_<m>_mean)."""
    if plan.search is None or plan.evaluation.cross_validation is None:
        return []
    allowed = [f"cv_{name}_mean" for name in CV_METRICS if name != "best_epoch"]
    if plan.search.objective.name in allowed:
        return []
    return [
        (
            "search.objective.metric",
            f"{plan.search.objective.name!r}: with evaluation.cross_validation a trial is scored by its folds' mean "
            f"held-out figure, one of {allowed}",
        )
    ]


def quantization_operators_problems(plan: Plan) -> list[tuple[str, str]]:
    """export.quantization.operators picks the nodes of ONNX Runtime's static INT8 variants: set where no
    model builds one, it would change nothing. (TensorRT INT8 engines take their own QDQ flavour.)"""
    if plan.export.quantization.operators == "auto":
        return []
    if any("int8_static" in (plan.export.for_model(name).precisions or []) for name in plan.export_model_names()):
        return []
    return [
        (
            "export.quantization.operators",
            "no model builds an int8_static variant (export.precisions, export.models.<m>.precisions), the only "
            "variant it applies to",
        )
    ]
