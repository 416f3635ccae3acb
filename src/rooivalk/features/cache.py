"""The content-addressed feature cache: each frozen encoder runs over each sample once.

An entry holds the embeddings of one sensor encoder over one split of one dataset version. Its key is
sha256 over exactly what determines the embeddings: the encoder's weights (every parameter and
buffer outside the head, by name), the preprocessing config, the dataset version id and the split.
Any change to one of them is a new key; nothing else is (file paths, run ids and timestamps are not
part of it), so a rerun with unchanged inputs finds the entry and does zero encoder forward passes.

Layout under the cache root (a local folder or s3:// prefix, through rooivalk.storage):
    <sensor>/<key>/features-<writer>.npy   float32 (N, D), row i = sample i of the split
    <sensor>/<key>/manifest.json           key, inputs, shape, the features file name and its sha256

Concurrency: a writer stores its features under a name unique to it and publishes the manifest last
(one atomic write). Two writers of the same key each leave a complete file; the manifest that lands
last names one of them with its checksum, so a reader never sees a mix. A manifest whose checksum
does not match the file (or whose file is gone) is not trusted: the entry is rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rooivalk import storage
from rooivalk.data.dataset import npy_bytes
from rooivalk.models.sensor_encoding import forward_features

MANIFEST = "manifest.json"
CACHE_FORMAT = "rooivalk-feature-cache/1"


def encoder_digest(model: nn.Module, head_prefix: str = "head.") -> str:
    """sha256 over the encoder's parameters and buffers (names, dtypes, shapes, bytes), head excluded."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(head_prefix):
            continue
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}\n".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def cache_key(encoder_sha256: str, preprocessing: dict[str, Any], dataset_version: str, split: str) -> str:
    payload = {
        "format": CACHE_FORMAT,
        "encoder": encoder_sha256,
        "preprocessing": preprocessing,
        "dataset_version": dataset_version,
        "split": split,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class CachedFeatures:
    features: np.ndarray  # float32 (N, D)
    key: str
    uri: str  # the entry's folder
    hit: bool
    forward_passes: int  # samples the encoder ran on for this call: 0 on a hit
    rebuilt_reason: str | None = None  # why an existing manifest was not trusted


def _read_entry(entry_uri: str, key: str) -> tuple[np.ndarray | None, str | None]:
    """(features, None) for a trustworthy entry; (None, reason) for a broken one; (None, None) if absent."""
    manifest_uri = f"{entry_uri}/{MANIFEST}"
    if not storage.exists(manifest_uri):
        return None, None
    try:
        manifest = json.loads(storage.read_bytes(manifest_uri))
        data_uri = f"{entry_uri}/{manifest['features_file']}"
        expected = manifest["features_sha256"]
    except (ValueError, KeyError) as error:
        return None, f"{manifest_uri}: unreadable manifest ({type(error).__name__}: {error})"
    if manifest.get("key") != key:
        return None, f"{manifest_uri}: manifest is for key {manifest.get('key')}, not {key}"
    if not storage.exists(data_uri):
        return None, f"{data_uri}: features file missing"
    data = storage.read_bytes(data_uri)
    actual = storage.sha256_bytes(data)
    if actual != expected:
        return None, f"{data_uri}: sha256 {actual[:12]}... does not match the manifest's {expected[:12]}..."
    return np.load(io.BytesIO(data), allow_pickle=False), None


Preprocess = Callable[[np.ndarray], np.ndarray]


def _unchanged(samples: np.ndarray) -> np.ndarray:
    return samples


@torch.no_grad()
def encode(
    model: nn.Module,
    samples: np.ndarray,
    batch_size: int,
    encode_batch: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    preprocess: Preprocess = _unchanged,
) -> np.ndarray:
    """Embeddings of `samples`, preprocessed batch by batch (the full split never exists as model input)."""
    model.eval()
    chunks = [
        encode_batch(model, torch.from_numpy(np.ascontiguousarray(preprocess(samples[i : i + batch_size]))))
        .float()
        .numpy()
        for i in range(0, len(samples), batch_size)
    ]
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, 0), np.float32)


def cached_features(
    cache_root: str,
    sensor: str,
    model: nn.Module,
    samples: np.ndarray,
    preprocessing: dict[str, Any],
    dataset_version: str,
    split: str,
    batch_size: int = 256,
    encode_batch: Callable[[nn.Module, torch.Tensor], torch.Tensor] = forward_features,
    encoder_sha256: str | None = None,
    preprocess: Preprocess = _unchanged,
) -> CachedFeatures:
    """The encoder's embeddings of `samples` from the cache, computing and storing them on a miss.

    `preprocess` (described by `preprocessing`, a key input) turns stored samples into model inputs;
    it runs only on a miss, so a hit costs one read and no compute."""
    digest = encoder_sha256 or encoder_digest(model)
    key = cache_key(digest, preprocessing, dataset_version, split)
    entry_uri = f"{cache_root.rstrip('/')}/{sensor}/{key}"
    features, reason = _read_entry(entry_uri, key)
    if features is not None:
        if len(features) != len(samples):
            reason = f"{entry_uri}: entry has {len(features)} rows, the split has {len(samples)}"
        else:
            return CachedFeatures(features, key, entry_uri, hit=True, forward_passes=0)
    features = encode(model, samples, batch_size, encode_batch, preprocess)
    data = npy_bytes(features)
    file_name = f"features-{uuid.uuid4().hex[:12]}.npy"
    sha = storage.write_bytes(f"{entry_uri}/{file_name}", data)
    manifest = {
        "format": CACHE_FORMAT,
        "key": key,
        "sensor": sensor,
        "encoder_sha256": digest,
        "preprocessing": preprocessing,
        "dataset_version": dataset_version,
        "split": split,
        "rows": int(features.shape[0]),
        "dim": int(features.shape[1]) if features.ndim == 2 else 0,
        "dtype": "float32",
        "features_file": file_name,
        "features_sha256": sha,
    }
    storage.write_text(f"{entry_uri}/{MANIFEST}", json.dumps(manifest, indent=2))  # last: publishes the entry
    return CachedFeatures(features, key, entry_uri, hit=False, forward_passes=len(samples), rebuilt_reason=reason)
