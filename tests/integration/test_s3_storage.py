"""rooivalk.storage against a real S3 HTTP server (moto's, on loopback): multipart uploads, digests
checked on read, and an upload cut off by the server going away mid-way."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import boto3
import numpy as np
import pytest

from rooivalk import storage
from rooivalk.data.dataset import load_dataset

pytestmark = pytest.mark.integration


def _client(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=endpoint)


def test_large_objects_upload_in_parts_and_carry_their_sha256(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROOIVALK_S3_MULTIPART_MB", "5")
    parts: list[int] = []
    client = storage._s3_client()
    count_part = lambda params, **_: parts.append(params["PartNumber"])  # noqa: E731
    client.meta.events.register("before-parameter-build.s3.UploadPart", count_part)
    data = np.random.default_rng(0).bytes(11 << 20)  # 11 MiB: three 5 MiB-or-less parts
    digest = storage.write_bytes("s3://rooivalk/big/blob.bin", data)
    assert sorted(parts) == [1, 2, 3]
    head = _client(s3_endpoint).head_object(Bucket="rooivalk", Key="big/blob.bin")
    assert head["Metadata"]["sha256"] == digest == storage.sha256_bytes(data)
    assert storage.read_bytes("s3://rooivalk/big/blob.bin", sha256=digest) == data
    assert storage.unfinished_uploads("s3://rooivalk/big") == []


def test_an_object_whose_bytes_do_not_match_its_sha256_is_refused(s3_endpoint: str) -> None:
    digest = storage.write_bytes("s3://rooivalk/x/weights.pt", b"good weights")
    # Someone overwrites the bytes but keeps the old metadata (or a manifest names another digest).
    _client(s3_endpoint).put_object(
        Bucket="rooivalk", Key="x/weights.pt", Body=b"evil weights", Metadata={"sha256": digest}
    )
    with pytest.raises(storage.IntegrityError, match=r"s3://rooivalk/x/weights.pt: sha256 .* object metadata"):
        storage.read_bytes("s3://rooivalk/x/weights.pt")
    _client(s3_endpoint).put_object(Bucket="rooivalk", Key="x/plain.bin", Body=b"abc")  # no metadata
    with pytest.raises(storage.IntegrityError, match="manifest"):
        storage.read_bytes("s3://rooivalk/x/plain.bin", sha256=storage.sha256_bytes(b"abd"))


def test_a_dataset_array_that_does_not_match_dataset_json_is_refused(s3_endpoint: str, tiny_dataset_dir: str) -> None:
    for local in Path(tiny_dataset_dir).iterdir():
        storage.write_bytes(f"s3://rooivalk/ds/{local.name}", local.read_bytes())
    assert load_dataset("s3://rooivalk/ds").info.files  # ingestion recorded every array's digest
    labels = np.load(Path(tiny_dataset_dir) / "labels.npy")
    buffer = __import__("io").BytesIO()
    np.save(buffer, labels[::-1].copy())
    _client(s3_endpoint).put_object(Bucket="rooivalk", Key="ds/labels.npy", Body=buffer.getvalue())
    with pytest.raises(storage.IntegrityError, match="s3://rooivalk/ds/labels.npy"):
        load_dataset("s3://rooivalk/ds")


def test_server_gone_mid_upload_fails_naming_the_uri_and_a_rerun_leaves_no_partial_object(
    s3_server, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROOIVALK_S3_MULTIPART_MB", "5")
    monkeypatch.setenv("ROOIVALK_S3_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("ROOIVALK_S3_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("ROOIVALK_S3_READ_TIMEOUT", "1")
    uri = "s3://rooivalk/ckpt/model.pt"
    data = np.random.default_rng(1).bytes(12 << 20)
    paused = threading.Event()

    def pause_server_at_part_two(params, **_):  # type: ignore[no-untyped-def]
        if params["PartNumber"] == 2 and not paused.is_set():
            paused.set()
            os.kill(s3_server.process.pid, signal.SIGSTOP)  # the server stops answering mid-upload

    client = storage._s3_client()
    handler = client.meta.events.register("before-parameter-build.s3.UploadPart", pause_server_at_part_two)
    try:
        with pytest.raises(storage.StorageError, match=r"s3://rooivalk/ckpt/model.pt: upload failed .* 2 attempts"):
            storage.write_bytes(uri, data)
    finally:
        os.kill(s3_server.process.pid, signal.SIGCONT)
        client.meta.events.unregister("before-parameter-build.s3.UploadPart", handler)
    assert paused.is_set()
    s3 = _client(s3_endpoint)
    assert "Contents" not in s3.list_objects_v2(Bucket="rooivalk", Prefix="ckpt/")  # nothing visible
    # The server is back: the rerun writes the whole object and clears the interrupted upload.
    digest = storage.write_bytes(uri, data)
    assert storage.read_bytes(uri, sha256=digest) == data
    assert storage.unfinished_uploads("s3://rooivalk/ckpt") == []


def test_settings_come_from_the_environment_and_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://minio.local:9000")
    monkeypatch.delenv("ROOIVALK_S3_ADDRESSING_STYLE", raising=False)
    settings = storage.S3Settings.from_env()
    assert (settings.endpoint_url, settings.addressing_style) == ("http://minio.local:9000", "path")
    monkeypatch.setenv("ROOIVALK_S3_ADDRESSING_STYLE", "sideways")
    with pytest.raises(storage.StorageError, match="ROOIVALK_S3_ADDRESSING_STYLE"):
        storage.S3Settings.from_env()


def test_listing_on_an_unreachable_endpoint_fails_naming_the_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    from rooivalk._dev.servers import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")  # nothing listens here
    for key, value in {"ROOIVALK_S3_MAX_ATTEMPTS": "1", "ROOIVALK_S3_CONNECT_TIMEOUT": "1"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(storage.StorageError, match=r"s3://rooivalk/checkpoints/x: LIST failed"):
        storage.list_uris("s3://rooivalk/checkpoints/x")
