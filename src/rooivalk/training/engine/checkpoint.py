"""Checkpoints that survive preemption: atomic, digested, verified on load, with fallback.

Layout under a checkpoint URI (local directory or s3:// prefix):
    ckpt-<global step, 9 digits>.pt   full training state (torch.save; loaded with weights_only=True)
    best.pt                           the best weights by the monitored metric
    manifest.json                     [{file, sha256, global_step, ...}], newest last

A checkpoint file is written first and the manifest (which carries its sha256) is replaced after,
both atomically, so a crash at any point leaves either the old or the new manifest, never a
manifest that points at a partial file. On load the newest entry whose bytes match its digest
wins; a corrupt or missing one is skipped with a warning naming it.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from typing import Any

import torch

from rooivalk import storage

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
BEST_FILE = "best.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (e.g. the model's shape changed); the message says why."""


@dataclass
class LoadedCheckpoint:
    state: dict[str, Any]
    entry: dict[str, Any]
    skipped: list[str]  # newer files that failed verification


def _serialize(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


class CheckpointStore:
    def __init__(self, uri: str, keep_last: int = 3) -> None:
        self.uri = uri.rstrip("/")
        self.keep_last = keep_last
        self._entries: list[dict[str, Any]] | None = None  # this writer's view of the manifest

    def _path(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def manifest(self) -> list[dict[str, Any]]:
        path = self._path(MANIFEST_FILE)
        if not storage.exists(path):
            return []
        try:
            entries = json.loads(storage.read_bytes(path))
        except (json.JSONDecodeError, storage.StorageError) as error:
            log.warning("checkpoint manifest %s is unreadable (%s); starting without it", path, error)
            return []
        return list(entries)

    def save(self, state: dict[str, Any], global_step: int, info: dict[str, Any]) -> dict[str, Any]:
        """Write one checkpoint, then the manifest; drop checkpoints beyond keep_last."""
        name = f"ckpt-{global_step:09d}.pt"
        digest = storage.write_bytes(self._path(name), _serialize(state))
        known = self._entries if self._entries is not None else self.manifest()  # read once, then kept
        entries = [e for e in known if e["file"] != name]
        entry = {"file": name, "sha256": digest, "global_step": global_step, **info}
        entries.append(entry)
        stale, kept = entries[: -self.keep_last], entries[-self.keep_last :]
        storage.write_text(self._path(MANIFEST_FILE), json.dumps(kept, indent=2))
        self._entries = kept
        for old in stale:  # after the manifest no longer names them
            self._delete(old["file"])
        return entry

    def save_best(self, weights: dict[str, torch.Tensor], info: dict[str, Any]) -> str:
        return storage.write_bytes(self._path(BEST_FILE), _serialize({"state_dict": weights, "info": info}))

    def _delete(self, name: str) -> None:
        storage.delete(self._path(name))

    def load_latest(self) -> LoadedCheckpoint | None:
        """The newest checkpoint whose sha256 verifies; None when there is none."""
        skipped: list[str] = []
        for entry in reversed(self.manifest()):
            path = self._path(entry["file"])
            try:
                data = storage.read_bytes(path, sha256=entry["sha256"])
            except storage.IntegrityError:
                skipped.append(f"{entry['file']} (sha256 mismatch: corrupt or partial)")
                continue
            except storage.StorageError:
                skipped.append(f"{entry['file']} (missing)")
                continue
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            if skipped:
                log.warning("skipped unusable checkpoints %s; resuming from %s", skipped, entry["file"])
            return LoadedCheckpoint(state, entry, skipped)
        if skipped:
            log.warning("no usable checkpoint in %s: %s", self.uri, skipped)
        return None


def model_signature(model: torch.nn.Module) -> dict[str, list[int]]:
    return {name: list(tensor.shape) for name, tensor in model.state_dict().items()}


def check_signature(saved: dict[str, list[int]], current: dict[str, list[int]], uri: str) -> None:
    """Refuse a resume whose model differs in shape, saying exactly what changed."""
    if saved == current:
        return
    changes = [f"{k}: {saved[k]} -> {current[k]}" for k in saved if k in current and saved[k] != current[k]]
    changes += [f"{k}: removed" for k in saved if k not in current]
    changes += [f"{k}: added" for k in current if k not in saved]
    shown = "; ".join(changes[:8]) + (f"; ... {len(changes) - 8} more" if len(changes) > 8 else "")
    raise CheckpointError(
        f"cannot resume from {uri}: the plan's model differs from the checkpoint's ({shown}). "
        "Use a new checkpoint location (training.checkpoint.uri) or set training.checkpoint.resume=false."
    )
