"""Checkpoints on S3 (moto's real HTTP server on loopback): what a retried pod resumes from."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from rooivalk.plan import Plan
from rooivalk.training import train_model
from rooivalk.training.checkpoint import CheckpointStore

pytestmark = pytest.mark.integration


def test_training_checkpoints_to_s3_and_resumes_from_there(
    s3_endpoint: str, tiny_dataset_dir: str, tmp_path: Path
) -> None:
    uri = "s3://rooivalk/checkpoints/tiny"
    raw = {
        "name": "s3",
        "data": {"source": tiny_dataset_dir, "format": "image_folder"},
        "model": {"architecture": "test_efficientnet", "input_size": 32},
        "training": {
            "batch_size": 8,
            "epochs": 2,
            "threads": 1,
            "deterministic": True,
            "checkpoint": {"uri": uri, "every_steps": 2, "keep_last": 2},
        },
    }
    first = train_model(Plan.model_validate(raw), tiny_dataset_dir, str(tmp_path / "first"))
    assert first.resumed_from is None
    keys = sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="rooivalk")["Contents"])
    checkpoints = [k for k in keys if k.rsplit("/", 1)[-1].startswith("ckpt-")]
    assert len(checkpoints) == 2  # keep_last: older ones were deleted
    assert "checkpoints/tiny/manifest.json" in keys
    assert "checkpoints/tiny/best.pt" in keys

    store = CheckpointStore(uri)
    loaded = store.load_latest()
    assert loaded is not None
    assert loaded.entry["global_step"] == first.metrics["global_steps"]

    raw["training"]["epochs"] = 3  # a longer plan on the same location continues from there
    second = train_model(Plan.model_validate(raw), tiny_dataset_dir, str(tmp_path / "second"))
    assert second.resumed_from is not None
    assert uri in second.resumed_from
    assert second.metrics["global_steps"] == 3 * 5
