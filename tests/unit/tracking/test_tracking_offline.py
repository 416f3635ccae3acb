"""Tracking calls that cannot be buffered must still not wait out MLflow's retries on a dead server."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from rooivalk._dev.servers import free_port
from rooivalk.export.mlflow_onnx import log_onnx_bundle
from rooivalk.tracking.buffer import new_offline_id


def test_onnx_flavor_logging_skips_an_unreachable_server_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here: MLflow's client would retry for minutes
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="rooivalk.export.mlflow_onnx"):
        log_onnx_bundle(dead, "0123456789abcdef", str(tmp_path), "model")
    # One refused /health probe takes milliseconds; MLflow's client backs off for minutes. 60 s leaves
    # a loaded CI machine room without letting the retries through.
    assert time.perf_counter() - started < 60
    assert "unreachable" in caplog.text
    assert str(tmp_path) in caplog.text


def test_onnx_flavor_logging_skips_a_run_made_offline(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # An offline run id (tracking was buffered earlier in the step) does not exist on any server yet.
    with caplog.at_level(logging.WARNING, logger="rooivalk.export.mlflow_onnx"):
        log_onnx_bundle(f"sqlite:///{tmp_path}/mlflow.db", new_offline_id(), str(tmp_path), "model")
    assert "not logged" in caplog.text
    assert not (tmp_path / "mlflow.db").exists()  # the store was never opened
