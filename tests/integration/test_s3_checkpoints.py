"""Checkpoints on S3 (moto's real HTTP server on loopback): what a retried pod resumes from."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from rooivalk.plan import Plan
from rooivalk.training import train_model
from rooivalk.training.engine.checkpoint import CheckpointStore

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


def test_a_sensor_model_checkpoints_to_s3_and_an_unreachable_endpoint_loses_nothing(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tensor (sensor) model through the one engine: checkpoints on S3; with the endpoint unreachable a
    resume fails naming the URI, and once it is back the same checkpoints resume the run."""
    import numpy as np
    import torch

    from rooivalk.models import create_model
    from rooivalk.plan import ModelSpec, TrainingSpec
    from rooivalk.storage import StorageError
    from rooivalk.training.engine.fitting import FitResult, fit_model
    from rooivalk.training.tasks import TensorClassification

    rng = np.random.default_rng(0)
    tracks, labels = rng.normal(size=(64, 32, 8)).astype(np.float32), rng.integers(0, 2, 64)
    uri = "s3://rooivalk/checkpoints/radar"

    def fit(epochs: int) -> FitResult:
        torch.manual_seed(0)
        model = create_model(ModelSpec(family="radar_sequence", architecture="gru"), 2)
        task = TensorClassification({"inputs": tracks}, labels, {"inputs": tracks}, labels, 2)
        spec = TrainingSpec(epochs=epochs, lr=1e-3, batch_size=16, threads=1, checkpoint={"every_steps": 2})
        return fit_model(model, task, spec, pretrained=False, checkpoint_uri=uri)

    fit(1)
    saved = sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="rooivalk")["Contents"])
    assert "checkpoints/radar/manifest.json" in saved
    with monkeypatch.context() as down:
        down.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # nothing listens on the discard port
        down.setenv("ROOIVALK_S3_MAX_ATTEMPTS", "1")
        down.setenv("ROOIVALK_S3_CONNECT_TIMEOUT", "1")
        with pytest.raises(StorageError, match=r"s3://rooivalk/checkpoints/radar/manifest\.json"):
            fit(2)
    assert sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="rooivalk")["Contents"]) == saved
    again: FitResult = fit(2)  # the endpoint is back: the first run's checkpoints are all there
    assert again.resumed_from is not None
    assert uri in again.resumed_from
