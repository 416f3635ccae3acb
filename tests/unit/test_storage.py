from pathlib import Path

import pytest

from rooivalk import storage


def test_write_is_atomic_and_returns_sha256(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.bin"
    digest = storage.write_bytes(target, b"hello")
    assert target.read_bytes() == b"hello"
    assert digest == storage.sha256_file(target) == storage.sha256_bytes(b"hello")
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]


def test_failed_write_keeps_previous_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model.pt"
    storage.write_bytes(target, b"good")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        storage.write_bytes(target, b"partial")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_tree_digest_changes_with_content(tmp_path: Path) -> None:
    storage.write_text(tmp_path / "d" / "x.txt", "1")
    storage.write_text(tmp_path / "d" / "y.txt", "2")
    before = storage.sha256_tree(tmp_path / "d")
    storage.write_text(tmp_path / "d" / "y.txt", "3")
    assert storage.sha256_tree(tmp_path / "d") != before
    assert storage.list_uris(tmp_path / "d") == [str(tmp_path / "d" / "x.txt"), str(tmp_path / "d" / "y.txt")]


def test_uri_parsing_and_errors(tmp_path: Path) -> None:
    assert storage.parse_uri("s3://bucket/key/x").bucket == "bucket"
    assert storage.parse_uri(f"file://{tmp_path}").key == str(tmp_path)
    with pytest.raises(storage.StorageError, match="unsupported URI scheme"):
        storage.parse_uri("gs://bucket/x")
    with pytest.raises(storage.StorageError, match="no such file"):
        storage.read_bytes(tmp_path / "missing")
