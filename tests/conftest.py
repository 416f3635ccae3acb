"""Shared fixtures: tiny generated image folders and plans (no downloads, seconds to build)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from rooivalk._dev.servers import LOCAL_S3_CREDENTIALS, Server, create_buckets, start_mlflow, start_moto

TINY_CLASSES = ("circle", "square", "stripes")


def _draw(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A grayscale uint8 image whose class is visible at any scale, plus noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    cx, cy = rng.uniform(0.4, 0.6, 2)
    if kind == "circle":
        base = ((x - cx) ** 2 + (y - cy) ** 2 < 0.08).astype(float)
    elif kind == "square":
        base = ((abs(x - cx) < 0.25) & (abs(y - cy) < 0.25)).astype(float)
    else:
        base = (np.sin((x + rng.uniform()) * 6 * np.pi) > 0).astype(float)
    noisy = base * 200 + rng.normal(30, 15, base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def make_image_folder(
    root: Path, per_class: int = 12, size: int = 16, classes: tuple[str, ...] = TINY_CLASSES, seed: int = 0
) -> Path:
    rng = np.random.default_rng(seed)
    for kind in classes:
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            Image.fromarray(_draw(kind, size, rng)).save(folder / f"{kind}_{index:03d}.png")
    return root


@pytest.fixture
def tiny_image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images")


def tiny_plan_dict(source: str, tracking_uri: str | None = None, **training: Any) -> dict[str, Any]:
    """A plan that trains timm's `test_efficientnet` from scratch in seconds."""
    return {
        "name": "tiny",
        "data": {"source": source, "format": "image_folder", "split": {"train": 0.6, "val": 0.2, "test": 0.2}},
        "model": {"architecture": "test_efficientnet", "input_size": 32, "drop_rate": 0.0},
        "training": {"batch_size": 8, "epochs": 2, "lr": 3e-3, "threads": 1, **training},
        "export": {
            "precisions": ["fp32", "int8_static"],
            "quantization": {"samples": 8},
            "latency_runs": 100,
            "latency_warmup": 2,
            "max_abs_diff": 1e-3,
        },
        "tracking": {"uri": tracking_uri, "experiment": "tiny"},
    }


@pytest.fixture
def tiny_dataset_dir(tmp_path: Path) -> str:
    """An ingested dataset of the tiny image folder: 3 classes x 24 grayscale 16x16 images."""
    from rooivalk.data import ingest_data
    from rooivalk.plan import DataSpec

    folder = make_image_folder(tmp_path / "images", per_class=24)
    out = str(tmp_path / "dataset")
    ingest_data(DataSpec(source=str(folder), format="image_folder", split={"train": 0.6, "val": 0.2, "test": 0.2}), out)
    return out


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real S3 HTTP endpoint on loopback (moto's server), one per test session; `.process` lets
    fault tests pause it (SIGSTOP) and resume it."""
    server = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture
def s3_endpoint(s3_server: Server, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The session's S3 server with an empty bucket named `rooivalk`, and the standard AWS
    environment variables pointing at it (the only way rooivalk learns S3 settings)."""
    import boto3

    for key, value in {"AWS_ENDPOINT_URL_S3": s3_server.url, **LOCAL_S3_CREDENTIALS}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=s3_server.url)
    if "rooivalk" in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket="rooivalk"):
            for item in page.get("Contents", []):
                client.delete_object(Bucket="rooivalk", Key=item["Key"])
        for upload in client.list_multipart_uploads(Bucket="rooivalk").get("Uploads", []):
            client.abort_multipart_upload(Bucket="rooivalk", Key=upload["Key"], UploadId=upload["UploadId"])
    else:
        client.create_bucket(Bucket="rooivalk")
    return s3_server.url


@pytest.fixture(scope="session")
def mlflow_server(s3_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real `mlflow server` on loopback: sqlite backend, artifacts proxied to s3://mlflow-artifacts on
    the moto server, job execution disabled. Only the server gets S3 credentials; clients talk HTTP."""
    create_buckets(s3_server.url, "mlflow-artifacts")
    folder = tmp_path_factory.mktemp("mlflow-server")
    server = start_mlflow(folder / "mlflow.db", "s3://mlflow-artifacts/", s3_server.url, folder / "server.log")
    yield server.url
    server.stop()
