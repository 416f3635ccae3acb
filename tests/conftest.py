"""Shared fixtures: tiny generated image folders and plans (no downloads, seconds to build)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

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
        "export": {"calibration_samples": 8, "latency_runs": 50, "latency_warmup": 2, "max_abs_diff": 1e-3},
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


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A real S3 HTTP endpoint on loopback (moto's server), with a bucket named `rooivalk`."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.1)
    for key, value in {
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="rooivalk")
    yield endpoint
    process.terminate()
    process.wait(timeout=10)
