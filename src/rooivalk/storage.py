"""One URI-addressed store for local paths and s3:// objects.

Writes are atomic: a local write goes to a temporary file in the same directory and is renamed into
place; an S3 PUT is atomic by nature. Every write returns the sha256 of what was written so that
artifacts can carry their digest. boto3 is imported lazily: local runs never pay for it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

_CHUNK = 1 << 20
# mkstemp creates files 0600; finished artifacts get the usual permissions under the process umask.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


class StorageError(OSError):
    """A URI that cannot be read or written; the message names the URI."""


@dataclass(frozen=True)
class Location:
    scheme: str  # "file" or "s3"
    bucket: str  # empty for local paths
    key: str  # local absolute path, or the S3 object key

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"


def parse_uri(uri: str | Path) -> Location:
    text = str(uri)
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StorageError(f"{text}: s3 URI without a bucket")
        return Location("s3", parsed.netloc, parsed.path.lstrip("/"))
    if parsed.scheme == "file":
        return Location("file", "", str(Path(parsed.path).resolve()))
    if parsed.scheme and len(parsed.scheme) > 1:  # "c:" style drive letters are paths
        raise StorageError(f"{text}: unsupported URI scheme {parsed.scheme!r} (use a path or s3://)")
    return Location("file", "", str(Path(text).expanduser().resolve()))


def _s3_client() -> Any:
    import boto3  # lazy: only S3 users pay for the import

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    return boto3.client("s3", endpoint_url=endpoint) if endpoint else boto3.client("s3")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(path: str | Path) -> str:
    """Digest of a directory: sha256 over sorted (relative path, file sha256) lines."""
    root = Path(path)
    if root.is_file():
        return sha256_file(root)
    lines = [f"{p.relative_to(root).as_posix()} {sha256_file(p)}" for p in sorted(root.rglob("*")) if p.is_file()]
    return sha256_bytes("\n".join(lines).encode())


def exists(uri: str | Path) -> bool:
    loc = parse_uri(uri)
    if not loc.is_s3:
        return Path(loc.key).exists()
    from botocore.exceptions import ClientError

    try:
        _s3_client().head_object(Bucket=loc.bucket, Key=loc.key)
        return True
    except ClientError:
        return bool(list_uris(uri))


def read_bytes(uri: str | Path) -> bytes:
    loc = parse_uri(uri)
    if not loc.is_s3:
        try:
            return Path(loc.key).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{uri}: no such file") from None
    from botocore.exceptions import ClientError

    try:
        return _s3_client().get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()  # type: ignore[no-any-return]
    except ClientError as error:
        raise StorageError(f"{uri}: {error}") from None


def write_bytes(uri: str | Path, data: bytes) -> str:
    """Write atomically; return the sha256 of the data."""
    loc = parse_uri(uri)
    if loc.is_s3:
        _s3_client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data)
        return sha256_bytes(data)
    target = Path(loc.key)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, _FILE_MODE)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return sha256_bytes(data)


def write_text(uri: str | Path, text: str) -> str:
    return write_bytes(uri, text.encode())


def list_uris(prefix: str | Path) -> list[str]:
    """Every file below a local directory or an S3 prefix, as URIs, sorted."""
    loc = parse_uri(prefix)
    if not loc.is_s3:
        root = Path(loc.key)
        if root.is_file():
            return [str(root)]
        return sorted(str(p) for p in root.rglob("*") if p.is_file())
    keys: list[str] = []
    paginator = _s3_client().get_paginator("list_objects_v2")
    base = loc.key.rstrip("/") + "/" if loc.key else ""
    for page in paginator.paginate(Bucket=loc.bucket, Prefix=base):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(f"s3://{loc.bucket}/{key}" for key in keys)


def iter_files(prefix: str | Path) -> Iterator[tuple[str, bytes]]:
    for uri in list_uris(prefix):
        yield uri, read_bytes(uri)


def local_copy(uri: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A local path holding the object at `uri` (the path itself when it is already local)."""
    loc = parse_uri(uri)
    if not loc.is_s3:
        path = Path(loc.key)
        if not path.exists():
            raise StorageError(f"{uri}: no such file or directory")
        return path
    directory = Path(cache_dir or tempfile.mkdtemp(prefix="rooivalk-"))
    target = directory / Path(loc.key).name
    write_bytes(target, read_bytes(uri))
    return target
