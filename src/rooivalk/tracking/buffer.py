"""Tracking that never takes training down: when the MLflow server cannot be reached, tracking calls
are written to a buffer (one JSON record per call, under any storage URI) and `rooivalk sync`
replays them later, without duplicates.

How it works:
- `buffered("op")` wraps a tracking function and registers it for replay under `op` (the layer that
  defines an op registers it: rooivalk.tracking its run calls, rooivalk.steps.registration the model
  registration, which loads models tracking knows nothing of). Before calling it, the server's /health is
  probed (3 s timeout, remembered per process for 30 s, so an outage costs one timeout, not MLflow's
  minutes of retries). Unreachable, or a connection error during the call, or a run id that was itself
  made offline: the call's arguments are recorded and an offline result returned (a run id
  `offline-<hex>` for a run that will be created at sync).
- Files a call logs (artifacts) are copied into the buffer, so a replay does not depend on
  temporary folders.
- `sync` replays the records in order. A run created at replay carries the tag
  `rooivalk.offline_id`, and `synced.json` in the buffer lists replayed records and the offline ->
  server id map, so a second sync (or one after a crash mid-way) does not create runs twice.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rooivalk import storage

BUFFER_ENV = "ROOIVALK_TRACKING_BUFFER"
OFFLINE_PREFIX = "offline-"
OFFLINE_TAG = "rooivalk.offline_id"
SYNCED_FILE = "synced.json"
RECORDS = "records"
FILES = "files"
_PROBE_TTL_SECONDS = 30.0
_probes: dict[str, tuple[float, bool]] = {}

F = TypeVar("F", bound=Callable[..., Any])

# op -> (the unwrapped function, whether it creates a run); filled by `buffered` at import.
_REPLAYABLE: dict[str, tuple[Callable[..., Any], bool]] = {}


class TrackingOffline(ConnectionError):
    """The tracking server cannot be reached (raised inside a call; the wrapper buffers it)."""


def buffer_uri() -> str | None:
    return os.environ.get(BUFFER_ENV) or None


def reachable(tracking_uri: str) -> bool:
    """Whether an http(s) tracking server answers /health (sqlite and file stores always do)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return True
    checked = _probes.get(tracking_uri)
    if checked is not None and time.monotonic() - checked[0] < _PROBE_TTL_SECONDS:
        return checked[1]
    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=3) as response:
            ok = bool(response.status == 200)
    except OSError:
        ok = False
    _probes[tracking_uri] = (time.monotonic(), ok)
    return ok


def _mark_unreachable(tracking_uri: str) -> None:
    _probes[tracking_uri] = (time.monotonic(), False)


def _is_connection_error(error: BaseException) -> bool:
    import requests

    if isinstance(error, ConnectionError | requests.ConnectionError | requests.Timeout):
        return True
    text = str(error)
    return "Max retries exceeded" in text or "Connection refused" in text or "API request to" in text


def is_offline_id(run_id: str) -> bool:
    """Whether a run id was handed out while the server was unreachable (created at sync)."""
    return run_id.startswith(OFFLINE_PREFIX)


def _has_offline_id(value: Any) -> bool:
    if isinstance(value, str):
        return is_offline_id(value)
    if isinstance(value, list | tuple):
        return any(_has_offline_id(v) for v in value)
    if isinstance(value, dict):
        return any(_has_offline_id(v) for v in value.values())
    return False


def new_offline_id() -> str:
    return OFFLINE_PREFIX + uuid.uuid4().hex


def _copy_files(path: str, record_id: str, buffer: str) -> str:
    """Copy a file or folder into the buffer; returns its URI there."""
    source = Path(path)
    target = f"{buffer}/{FILES}/{record_id}/{source.name}"
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for file in files:
        relative = file.name if source.is_file() else f"{source.name}/{file.relative_to(source).as_posix()}"
        storage.write_bytes(f"{buffer}/{FILES}/{record_id}/{relative}", file.read_bytes())
    return target


def record(op: str, tracking_uri: str, args: dict[str, Any], result: Any, file_args: tuple[str, ...] = ()) -> None:
    """Append one buffered call. `file_args`: arguments naming local files/folders to copy in."""
    buffer = buffer_uri()
    if buffer is None:
        raise TrackingOffline(
            f"tracking server {tracking_uri} unreachable and no tracking buffer is set ({BUFFER_ENV}); "
            "`rooivalk run` sets one in the run folder"
        )
    record_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    stored = dict(args)
    for name in file_args:
        if stored.get(name) and Path(str(stored[name])).exists():
            stored[name] = _copy_files(str(stored[name]), record_id, buffer)
    payload = {"id": record_id, "op": op, "tracking_uri": tracking_uri, "args": stored, "result": result}
    storage.write_text(f"{buffer}/{RECORDS}/{record_id}.json", json.dumps(payload, default=_jsonable))


def _jsonable(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else str(value)


def buffered(
    op: str,
    offline_result: Callable[[dict[str, Any]], Any],
    file_args: tuple[str, ...] = (),
    writes: bool = True,
    creates_run: bool = False,
) -> Callable[[F], F]:
    """Wrap a tracking function whose first parameter is the tracking URI (see module doc).
    `offline_result(args)`: what the call returns when buffered; `writes=False` for look-ups, which
    are answered from the buffer and not recorded; `creates_run`: the call takes `extra_tags` and
    returns a new run's id (replay tags the run with its offline id, so a second replay finds it)."""

    def decorate(func: F) -> F:
        if writes:
            _REPLAYABLE[op] = (func, creates_run)
        import inspect

        signature = inspect.signature(func)
        uri_parameter = next(iter(signature.parameters))

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            uri = str(arguments.pop(uri_parameter))
            if not _has_offline_id(arguments) and reachable(uri):
                try:
                    return func(*args, **kwargs)
                except Exception as error:
                    if not _is_connection_error(error):
                        raise
                    _mark_unreachable(uri)
            result = offline_result(arguments)
            if writes:
                record(op, uri, arguments, result, file_args)
            return result

        wrapper.__wrapped__ = func
        return wrapper  # type: ignore[return-value]

    return decorate


def pending_records(buffer: str) -> list[dict[str, Any]]:
    """Buffered records not yet replayed, oldest first."""
    done = set(_synced(buffer)["done"])
    records = (
        [json.loads(data) for _, data in storage.iter_files(f"{buffer}/{RECORDS}")]
        if storage.exists(f"{buffer}/{RECORDS}")
        else []
    )
    return sorted((r for r in records if r["id"] not in done), key=lambda r: r["id"])


def _synced(buffer: str) -> dict[str, Any]:
    uri = f"{buffer}/{SYNCED_FILE}"
    return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else {"done": [], "ids": {}}


def _map_ids(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return ids.get(value, value)
    if isinstance(value, list):
        return [_map_ids(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _map_ids(v, ids) for k, v in value.items()}
    return value


@dataclass
class SyncResult:
    replayed: int
    skipped: int
    runs_created: int
    tracking_uri: str | None


def sync(buffer: str, tracking_uri: str | None = None, progress: Callable[[str], None] | None = None) -> SyncResult:
    """Replay a buffer's pending records against `tracking_uri` (default: the URI each record was
    meant for). Idempotent: replayed records are listed in synced.json; runs are found by offline id."""
    report = progress or (lambda _text: None)
    state = _synced(buffer)
    skipped = len(state["done"])
    replayed = created = 0
    for item in pending_records(buffer):
        uri = tracking_uri or item["tracking_uri"]
        if not reachable(uri):
            raise TrackingOffline(f"tracking server {uri} is still unreachable; {replayed} records replayed so far")
        args = _map_ids(item["args"], state["ids"])
        result = replay(item["op"], uri, args, item["result"])
        if isinstance(item["result"], str) and item["result"].startswith(OFFLINE_PREFIX):
            state["ids"][item["result"]] = result
            created += 1
        state["done"].append(item["id"])
        storage.write_text(f"{buffer}/{SYNCED_FILE}", json.dumps(state, indent=2))  # after each: crash-safe
        replayed += 1
        report(f"replayed {item['op']} ({item['id']})")
    return SyncResult(replayed, skipped, created, tracking_uri)


def replay(op: str, tracking_uri: str, args: dict[str, Any], offline_result: Any) -> Any:
    """Run one buffered call for real. A run it creates is tagged with its offline id, and found by it
    instead of created again when the record is replayed twice."""
    if op not in _REPLAYABLE:
        raise ValueError(
            f"unknown buffered tracking call {op!r} (its module is not imported: registrations replay "
            "through rooivalk.steps.registration, which `rooivalk sync` imports)"
        )
    func, creates_run = _REPLAYABLE[op]
    if creates_run:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
        found = client.search_runs(experiments, filter_string=f"tags.`{OFFLINE_TAG}` = '{offline_result}'")
        if found:
            return str(found[0].info.run_id)
        args = {**args, "extra_tags": {**(args.get("extra_tags") or {}), OFFLINE_TAG: str(offline_result)}}
    return func(tracking_uri, **args)
