"""Real servers on loopback for tests and `make demo-s3`: moto's S3 server and an `mlflow server`
whose artifact store is that S3. Started as processes, ready when their health URL answers, stopped
by pid. Not for production: a cluster runs MinIO/S3 and the MLflow deployment of the Helm chart.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# moto accepts any credentials; these only have to exist. The MLflow server gets them, clients do not.
LOCAL_S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.process.send_signal(signal.SIGCONT)  # a fault test may have left it paused
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def create_buckets(endpoint: str, *names: str) -> None:
    """Create buckets on a local S3 server with the local credentials (not whatever the caller's
    environment holds)."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=LOCAL_S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=LOCAL_S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    )
    for name in names:
        client.create_bucket(Bucket=name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(command: list[str], url: str, health_url: str, env: dict[str, str], log: Path, timeout: float) -> Server:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(health_url, timeout=1)
            return Server(url, process, log)
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(
                    f"{command[0]} did not become healthy; log {log}:\n{log.read_text()[-2000:]}"
                ) from None
            time.sleep(0.2)


def start_moto(log: Path, port: int | None = None) -> Server:
    """moto's S3 HTTP server (in memory) on 127.0.0.1; ready in about a second."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    return _start(command, url, url, {**os.environ, **LOCAL_S3_CREDENTIALS}, log, timeout=30)


def start_mlflow(backend_db: Path, artifacts_uri: str, s3_endpoint: str, log: Path, port: int | None = None) -> Server:
    """`mlflow server`: sqlite backend, artifacts proxied to `artifacts_uri` on `s3_endpoint`, job
    execution off (0.5 GiB instead of 2.3 GiB, ready in ~6 s). Only the server holds S3 credentials."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        **LOCAL_S3_CREDENTIALS,
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    command = [
        str(Path(sys.executable).parent / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{backend_db}",
        "--artifacts-destination", artifacts_uri,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    return _start(command, url, f"{url}/health", env, log, timeout=90)
