"""The `evaluation` section: gates on the evaluation report's metrics."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializationInfo, SerializerFunctionWrapHandler, model_serializer, model_validator

from rooivalk.plan.base import Strict


class Gate(Strict):
    """A bound on a figure, or a requirement's criterion (`requirement: ID`; the plan fills in its metric
    and bounds, rooivalk.plan.document)."""

    metric: str = ""
    min: float | None = None
    max: float | None = None
    requirement: str | None = Field(None, description="a requirements[].id: the gate checks that requirement")

    @model_validator(mode="after")
    def _has_bound(self) -> Gate:
        if self.requirement is not None:
            given = sorted({"metric", "min", "max"} & self.model_fields_set)
            if given:
                raise ValueError(
                    f"a gate naming requirement {self.requirement} takes its criterion from it: leave out {given}"
                )
            return self
        if not self.metric:
            raise ValueError("a gate needs a metric with 'min' or 'max', or a requirement id")
        if self.min is None and self.max is None:
            raise ValueError(f"gate on {self.metric!r} needs 'min' or 'max'")
        return self

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        """A requirement's gate dumps as the user wrote it, `{requirement: ID}`: the metric and bounds the
        plan filled in from the requirement are not the gate's own (a dumped plan, edited and read again,
        takes them from the requirement again)."""
        if self.requirement is not None:
            return {"requirement": self.requirement}
        dumped: dict[str, Any] = handler(self)
        return dumped


class DetectionTTASpec(Strict):
    """Test-time augmentation of a detector: every view's detections mapped back and merged by weighted
    boxes fusion (ensemble-boxes). Views: each flip x rotation x scale."""

    hflip: bool = Field(True, description="also the horizontally flipped image")
    rotations: list[Literal[0, 90, 180, 270]] = Field([0], min_length=1, description="degrees, counter-clockwise")
    scales: list[float] = Field([1.0], min_length=1, description="image scale factors, e.g. [0.9, 1.0, 1.1]")
    iou_threshold: float = Field(0.55, gt=0, le=1, description="boxes of one class overlapping this much are fused")

    @model_validator(mode="after")
    def _positive_scales(self) -> DetectionTTASpec:
        if any(scale <= 0 for scale in self.scales):
            raise ValueError(f"scales must be > 0, got {self.scales}")
        return self


# What a cross-validation scores each fold model on (its held-out fold); cv_<name>_mean/_std of each.
CV_METRICS = ("accuracy", "macro_f1", "min_class_recall", "log_loss", "best_epoch")


class CrossValidationSpec(Strict):
    """k-fold cross-validation of a sequence or table plan's model over its training split
    (rooivalk.training.cross_validation)."""

    folds: int = Field(5, ge=2, le=50)
    stratified: bool = Field(True, description="every fold holds the classes in their training-split proportions")
    seed: int | None = Field(None, description="seed of the fold assignment; null: training.seed")
    refit: Literal["all", "best_fold"] = Field(
        "all",
        description="the model that ships: all trains once more on the whole training split (the validation split "
        "picks its best epoch); best_fold ships the fold model with the highest held-out accuracy",
    )


class EvaluationSpec(Strict):
    gates: list[Gate] = []
    fail_on_gate: bool = Field(True, description="Fail the pipeline when a gate fails.")
    tta: DetectionTTASpec | None = Field(
        None,
        description="detectors: also score the test split with test-time augmentation (test_tta_* metrics, which "
        "gates may name, and the latency it costs); null: plain inference only",
    )
    cross_validation: CrossValidationSpec | None = Field(
        None,
        description="sequence and table plans: k fold models first, their held-out metrics' mean and std "
        "(cv_<metric>_mean/_std, a search objective), then the model that ships (refit); null: none",
    )
