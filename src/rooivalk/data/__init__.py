"""Datasets: ingestion, the versioned artifact, splits and quarantine (no torch import here)."""

from rooivalk.data.ingest import IngestError, IngestResult
from rooivalk.data.ingest_plan import ingest_data

__all__ = ["IngestError", "IngestResult", "ingest_data"]
