"""The `evaluation` section: gates on the evaluation report's metrics."""

from __future__ import annotations

from pydantic import Field, model_validator

from rooivalk.plan.base import Strict


class Gate(Strict):
    metric: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _has_bound(self) -> Gate:
        if self.min is None and self.max is None:
            raise ValueError(f"gate on {self.metric!r} needs 'min' or 'max'")
        return self


class EvaluationSpec(Strict):
    gates: list[Gate] = []
    fail_on_gate: bool = Field(True, description="Fail the pipeline when a gate fails.")
