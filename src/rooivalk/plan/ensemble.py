"""`ensemble`: a table plan's mlp model together with an XGBoost model, weighted (the reference plan's
threat-attribution model: XGBoost 0.6 + MLP 0.4).

The XGBoost model is trained by xgboost itself (rooivalk.training.xgboost_training) on the same
model inputs and splits as the mlp, with early stopping on the validation split; its seed and threads
are `training.seed` and `training.threads`. Evaluation scores each member alone and the ensemble;
export ships one ONNX graph that computes the weighted probabilities.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from rooivalk.plan.base import Strict

ENSEMBLE_MEMBERS = ("model", "xgboost")  # the plan's model, and the XGBoost model


class XGBoostSpec(Strict):
    trees: int = Field(200, ge=1, description="boosting rounds at most (one tree per class each)")
    max_depth: int = Field(8, ge=1)
    learning_rate: float = Field(0.1, gt=0)
    early_stopping_rounds: int | None = Field(
        20, ge=1, description="stop after this many rounds without a lower validation log loss; null: never"
    )
    subsample: float = Field(1.0, gt=0, le=1, description="share of rows sampled per tree")
    colsample_bytree: float = Field(1.0, gt=0, le=1, description="share of features sampled per tree")
    min_child_weight: float = Field(1.0, ge=0)
    reg_lambda: float = Field(1.0, ge=0, description="L2 on leaf weights")


class EnsembleSpec(Strict):
    xgboost: XGBoostSpec = XGBoostSpec()
    weights: dict[str, float] | Literal["fitted"] = Field(
        default_factory=lambda: {"xgboost": 0.6, "model": 0.4},
        description="each member's weight ({model: w, xgboost: w}, normalized to sum 1), or fitted: the "
        "weights that minimize the validation log loss",
    )

    @field_validator("weights")
    @classmethod
    def _members(cls, value: dict[str, float] | str) -> dict[str, float] | str:
        if isinstance(value, str):
            return value
        if sorted(value) != sorted(ENSEMBLE_MEMBERS):
            raise ValueError(f"give a weight for each member {list(ENSEMBLE_MEMBERS)}, got {sorted(value)}")
        if any(weight < 0 for weight in value.values()) or sum(value.values()) <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {value}")
        return value
