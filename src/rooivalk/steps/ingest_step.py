"""What the ingest steps (components ingest_data and ingest_events) record: metrics, the dataset and
quarantine artifacts with their digests, the dataset's own files and its card in the step's MLflow run,
and the run tagged with the dataset version, so that a dataset version leads to the run that made it
as a registered model version does (rooivalk.tracking.lineage_tags)."""

from __future__ import annotations

from typing import Any

from rooivalk import tracking
from rooivalk.steps.step_context import StepContext
from rooivalk.tracking.promotion import DATASET_TAG

# Logged when they exist locally; the names are the data layer's (checked in tests/unit/steps): importing
# rooivalk.data here would load the readers into every step that imports rooivalk.steps.
INGEST_LOG_FILES = ("dataset.json", "quarantine.json", "class_balance.png", "dataset_card.json", "dataset_card.md")


def record_ingest(
    step: StepContext,
    metrics: dict[str, float],
    dataset_version: str,
    dataset_path: str,
    quarantine_path: str,
    **extra: Any,
) -> None:
    """Record an ingestion in its step's run; `extra` goes into the step's end event (summary.json)."""
    tracking.set_tags(step.tracking_uri, step.run_id, {DATASET_TAG: dataset_version})
    step.record(
        metrics,
        {"dataset": dataset_path, "quarantine": quarantine_path},
        log_files=[f"{dataset_path}/{name}" for name in INGEST_LOG_FILES],
        dataset_version=dataset_version,
        **extra,
    )
