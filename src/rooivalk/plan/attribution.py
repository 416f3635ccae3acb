"""`attribution`: the counter-drone system's threat-attribution model, a step of its own in the
multi-sensor pipeline (rooivalk.steps.attribution_step).

Who flies a detected drone and why is read from a table of what the sensors measure (RF link, track
kinematics, time of day, ...), not from the sensor samples the other models see: it has its own data,
model, training, ensemble, gates and export settings, the same keys and checks as a single-model table
plan (pipelines/plans/attribution.yaml), under `attribution.`.
"""

from __future__ import annotations

from pydantic import Field

from rooivalk.plan.base import Strict
from rooivalk.plan.data import DataSpec
from rooivalk.plan.ensemble import EnsembleSpec
from rooivalk.plan.evaluation import EvaluationSpec
from rooivalk.plan.export import ExportSpec
from rooivalk.plan.models import ModelSpec
from rooivalk.plan.training import TrainingSpec


class AttributionSpec(Strict):
    data: DataSpec = Field(description="A table (data.format table), e.g. simulate.kind attribution.")
    model: ModelSpec = Field(description="The table model (family mlp).")
    training: TrainingSpec = TrainingSpec()
    ensemble: EnsembleSpec | None = Field(
        default_factory=EnsembleSpec, description="The XGBoost member and weights; null: the mlp alone."
    )
    evaluation: EvaluationSpec = EvaluationSpec()
    export: ExportSpec = ExportSpec()
