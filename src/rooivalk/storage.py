"""One URI-addressed store for local paths and s3:// objects.

Writes are atomic: a local write goes to a temporary file in the same directory and is renamed into
place; an S3 object appears only when its PUT (or its multipart upload's completion) succeeds, and a
failed multipart upload is aborted, so readers never see part of an object. Every write returns the
sha256 of what was written and stores it on the S3 object as metadata (`x-amz-meta-sha256`);
`read_bytes` checks it, and a caller holding a manifest's digest passes it as `sha256=`.

S3 settings come from the standard AWS chain only (environment, ~/.aws config and credentials
files, instance or pod roles): credentials never appear in plans. Beyond that chain:
  AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL   a MinIO or other S3-compatible endpoint (boto3's own names)
  ROOIVALK_S3_ADDRESSING_STYLE              path | virtual | auto (default: path with an endpoint, else auto)
  ROOIVALK_S3_MAX_ATTEMPTS                  botocore "standard" retries with exponential backoff (default 5)
  ROOIVALK_S3_CONNECT_TIMEOUT / _READ_TIMEOUT  seconds (default 5 / 60)
  ROOIVALK_S3_MULTIPART_MB                  objects at least this large upload in parts (default 64)
boto3 is imported lazily: local runs never pay for it.
"""

from __future__ import annotations

import functools
import hashlib
import io
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


class IntegrityError(StorageError):
    """An object whose bytes do not match the sha256 recorded for it; it is refused, not used."""


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


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None
    addressing_style: str
    max_attempts: int
    connect_timeout: float
    read_timeout: float
    multipart_bytes: int

    @classmethod
    def from_env(cls) -> S3Settings:
        env = os.environ
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or env.get("MLFLOW_S3_ENDPOINT_URL")
        style = env.get("ROOIVALK_S3_ADDRESSING_STYLE") or ("path" if endpoint else "auto")
        if style not in ("path", "virtual", "auto"):
            raise StorageError(f"ROOIVALK_S3_ADDRESSING_STYLE={style!r}: use path, virtual or auto")
        try:
            return cls(
                endpoint_url=endpoint or None,
                addressing_style=style,
                max_attempts=int(env.get("ROOIVALK_S3_MAX_ATTEMPTS", "5")),
                connect_timeout=float(env.get("ROOIVALK_S3_CONNECT_TIMEOUT", "5")),
                read_timeout=float(env.get("ROOIVALK_S3_READ_TIMEOUT", "60")),
                multipart_bytes=int(float(env.get("ROOIVALK_S3_MULTIPART_MB", "64")) * (1 << 20)),
            )
        except ValueError as error:
            raise StorageError(f"ROOIVALK_S3_* setting is not a number: {error}") from None


@functools.cache
def _client_for(settings: S3Settings) -> Any:
    import boto3  # lazy: only S3 users pay for the import
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": settings.max_attempts, "mode": "standard"},
        s3={"addressing_style": settings.addressing_style},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
    )
    # Credentials and region: boto3's default chain (env, config files, IMDS/IRSA), never plans.
    return boto3.session.Session().client("s3", endpoint_url=settings.endpoint_url, config=config)


def _s3_client() -> Any:
    """An S3 client for the current environment's settings (cached per distinct settings)."""
    return _client_for(S3Settings.from_env())


def _s3_failure(uri: str | Path, action: str, error: Exception, settings: S3Settings | None = None) -> StorageError:
    attempts = (settings or S3Settings.from_env()).max_attempts
    return StorageError(f"{uri}: {action} failed ({type(error).__name__}: {error}); retried up to {attempts} attempts")


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
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        _s3_client().head_object(Bucket=loc.bucket, Key=loc.key)
        return True
    except ClientError:
        return bool(list_uris(uri))
    except BotoCoreError as error:
        raise _s3_failure(uri, "HEAD", error) from None


def read_bytes(uri: str | Path, sha256: str | None = None) -> bytes:
    """The object's bytes. `sha256`: the digest a manifest recorded for it; an S3 object's own
    `sha256` metadata (written by write_bytes) is checked too. A mismatch raises IntegrityError."""
    loc = parse_uri(uri)
    recorded: str | None = None
    if not loc.is_s3:
        try:
            data = Path(loc.key).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{uri}: no such file") from None
    else:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = _s3_client().get_object(Bucket=loc.bucket, Key=loc.key)
            data = response["Body"].read()
        except ClientError as error:
            raise StorageError(f"{uri}: {error}") from None
        except BotoCoreError as error:
            raise _s3_failure(uri, "GET", error) from None
        recorded = response.get("Metadata", {}).get("sha256")
    checks = [
        (expected, source) for expected, source in ((sha256, "manifest"), (recorded, "object metadata")) if expected
    ]
    actual = sha256_bytes(data) if checks else ""
    for expected, source in checks:
        if actual != expected:
            raise IntegrityError(
                f"{uri}: sha256 {actual[:16]}... does not match the {source}'s {expected[:16]}...: "
                "corrupt or tampered; refused"
            )
    return data


def write_bytes(uri: str | Path, data: bytes) -> str:
    """Write atomically; return the sha256 of the data."""
    loc = parse_uri(uri)
    if loc.is_s3:
        return _put_s3(uri, loc, data)
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


def _put_s3(uri: str | Path, loc: Location, data: bytes) -> str:
    """PUT small objects, multipart-upload large ones; both carry the sha256 as metadata."""
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import BotoCoreError, ClientError

    settings = S3Settings.from_env()
    client = _client_for(settings)
    digest = sha256_bytes(data)
    try:
        if len(data) < settings.multipart_bytes:
            client.put_object(Bucket=loc.bucket, Key=loc.key, Body=data, Metadata={"sha256": digest})
        else:
            _abort_unfinished_uploads(client, loc)
            part = max(settings.multipart_bytes, 5 << 20)  # S3's smallest part (but the last) is 5 MiB
            config = TransferConfig(multipart_threshold=settings.multipart_bytes, multipart_chunksize=part)
            # s3transfer aborts the multipart upload when a part fails: no object appears.
            client.upload_fileobj(
                io.BytesIO(data), loc.bucket, loc.key, ExtraArgs={"Metadata": {"sha256": digest}}, Config=config
            )
    except (BotoCoreError, ClientError) as error:
        raise _s3_failure(uri, "upload", error, settings) from None
    return digest


def _abort_unfinished_uploads(client: Any, loc: Location) -> None:
    """Abort multipart uploads of this key that an earlier, interrupted run left behind (their
    parts are invisible to readers but billed)."""
    response = client.list_multipart_uploads(Bucket=loc.bucket, Prefix=loc.key)
    for upload in response.get("Uploads", []):
        if upload["Key"] == loc.key:
            client.abort_multipart_upload(Bucket=loc.bucket, Key=loc.key, UploadId=upload["UploadId"])


def unfinished_uploads(prefix: str) -> list[str]:
    """Keys under an s3:// prefix with a multipart upload in progress (what an interrupted upload leaves)."""
    loc = parse_uri(prefix)
    response = _s3_client().list_multipart_uploads(Bucket=loc.bucket, Prefix=loc.key)
    return sorted(upload["Key"] for upload in response.get("Uploads", []))


def delete(uri: str | Path) -> None:
    """Remove one object or file (no error when it is already gone)."""
    loc = parse_uri(uri)
    if loc.is_s3:
        _s3_client().delete_object(Bucket=loc.bucket, Key=loc.key)
    else:
        Path(loc.key).unlink(missing_ok=True)


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
    from botocore.exceptions import BotoCoreError

    keys: list[str] = []
    paginator = _s3_client().get_paginator("list_objects_v2")
    base = loc.key.rstrip("/") + "/" if loc.key else ""
    try:
        for page in paginator.paginate(Bucket=loc.bucket, Prefix=base):
            keys.extend(item["Key"] for item in page.get("Contents", []))
    except BotoCoreError as error:  # name the URI, not just botocore's endpoint URL
        raise _s3_failure(prefix, "LIST", error) from None
    return sorted(f"s3://{loc.bucket}/{key}" for key in keys)


def iter_files(prefix: str | Path) -> Iterator[tuple[str, bytes]]:
    for uri in list_uris(prefix):
        yield uri, read_bytes(uri)


def copy_folder(source: str | Path, target: str | Path, last: str | None = None) -> int:
    """Copy every file below `source` to the same relative path below `target` (local or S3, either
    way); the file named `last` (a folder's completion marker, e.g. profile.json) is written after the
    rest, so a reader that waits for it never sees a half-copied folder. Returns the files copied."""
    base = str(source).rstrip("/")
    uris = list_uris(source)
    uris.sort(key=lambda uri: uri.rsplit("/", 1)[-1] == last)  # stable: the marker moves to the end
    for uri in uris:
        relative = uri[len(base) :].lstrip("/")
        write_bytes(f"{str(target).rstrip('/')}/{relative}", read_bytes(uri))
    return len(uris)
