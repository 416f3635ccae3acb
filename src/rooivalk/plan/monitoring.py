"""The `monitoring` section of a plan: drift checks, the monitor service and the retraining signal."""

from __future__ import annotations

from pydantic import Field

from rooivalk.plan.base import Strict


class WebhookSpec(Strict):
    url: str | None = Field(
        None,
        description="Where a retraining event is POSTed when drift is flagged (on clusters: an Argo Events "
        "webhook EventSource); null: no event is sent.",
    )
    max_attempts: int = Field(5, ge=1, description="Tries per event; waits double from backoff_s between them.")
    backoff_s: float = Field(1.0, gt=0)
    timeout_s: float = Field(5.0, gt=0)


class MonitoringSpec(Strict):
    reference_uri: str | None = Field(
        None,
        description="The reference profile (folder with profile.json) the training pipeline stored; "
        "`rooivalk monitor serve` needs it (here or --reference).",
    )
    drift_share: float = Field(
        0.5, gt=0, le=1, description="Dataset drift when at least this share of the columns drifted."
    )
    stattest_threshold: float | None = Field(
        None,
        gt=0,
        description="Per-column threshold for Evidently's test chosen by column type and size; null: "
        "Evidently's default (0.05 for p-values, 0.1 for distances).",
    )
    embedding_threshold: float = Field(
        0.55, gt=0.5, lt=1, description="ROC AUC of a classifier telling reference from current embeddings."
    )
    embeddings: bool = Field(True, description="Check embedding drift in batch checks (a classifier per sensor).")
    window_rows: int = Field(5000, ge=10, description="The monitor service's sliding window of production rows.")
    min_rows: int = Field(500, ge=10, description="No drift check on fewer window rows than this.")
    check_interval_s: float = Field(60.0, gt=0, description="How often the monitor service checks its window.")
    max_batch_rows: int = Field(10_000, ge=1, description="Larger batches are refused (HTTP 413).")
    max_body_mb: float = Field(16.0, gt=0, description="Larger request bodies are refused (HTTP 413).")
    state_uri: str | None = Field(
        None, description="Where the service persists its window (any storage URI) so it survives a restart."
    )
    webhook: WebhookSpec = WebhookSpec()
