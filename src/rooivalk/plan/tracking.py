"""The `tracking` section: where MLflow runs go, the registry name and when a challenger is promoted."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rooivalk.plan.base import Strict


class PromotionSpec(Strict):
    """When a new model version (alias `challenger`) takes the alias `champion`."""

    metric: str | None = Field(
        None, description="Test metric to compare; null: test_accuracy (one model) or fusion_test_accuracy (fusion)."
    )
    mode: Literal["max", "min"] = "max"
    margin: float = Field(0.0, ge=0, description="The challenger must beat the champion by more than this.")


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
