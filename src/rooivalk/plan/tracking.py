"""The `tracking` section: where MLflow runs go, the registry name and when a challenger is promoted."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from rooivalk.plan.base import Strict


class PromotionSpec(Strict):
    """When a new model version (alias `challenger`) takes the alias `champion`."""

    metric: str | None = Field(
        None,
        description="Test metric to compare; null: test_accuracy (one model; a detector: test_map50) or "
        "fusion_test_accuracy (fusion).",
    )
    mode: Literal["max", "min"] = "max"
    margin: float = Field(0.0, ge=0, description="The challenger must beat the champion by more than this.")
    require_approval: bool = Field(
        False,
        description="A challenger that beats the champion waits, validated, for `rooivalk approve NAME VERSION --by "
        "WHO`, which releases it and makes it champion; false: it becomes champion when registered.",
    )


class TrackingSpec(Strict):
    uri: str | None = Field(
        None, description="MLflow tracking URI: a server URL (http://...) or null: sqlite in the run folder."
    )
    experiment: str = "rooivalk"
    registered_model: str | None = Field(None, description="Registry name; null: the plan name.")
    promotion: PromotionSpec = PromotionSpec()
    buffer_uri: str | None = Field(
        None,
        description="Where tracking records go while the server is unreachable (any storage URI; "
        "`rooivalk sync` replays them); null: <run folder>/tracking-buffer for `rooivalk run`.",
    )
    loggers: list[Literal["csv", "tensorboard"]] = Field(
        [],
        description="Loggers beside MLflow: every metric a step logs also goes to metrics.csv and/or TensorBoard "
        "event files, logged to the step's MLflow run under logs/ (and copied to log_uri).",
    )
    log_uri: str | None = Field(
        None,
        description="Where the loggers' files are copied (any storage URI; <log_uri>/<pipeline run id>/<step>/); "
        "null: the step's MLflow run only, and <run folder>/logs for `rooivalk run`.",
    )

    @field_validator("loggers")
    @classmethod
    def _each_logger_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"name each logger once, got {value}")
        return value

    @model_validator(mode="after")
    def _log_uri_needs_a_logger(self) -> TrackingSpec:
        if self.log_uri and not self.loggers:
            raise ValueError("log_uri: no logger writes there; set tracking.loggers (csv, tensorboard)")
        return self
