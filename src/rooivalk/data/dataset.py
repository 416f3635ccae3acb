"""The versioned dataset artifact that `ingest_data` writes and every later step reads.

Layout of a dataset directory (all written atomically through rooivalk.storage):
    dataset.json     DatasetInfo: version id, classes, image shape, split sizes, class balance
    images.npy       uint8 (N, H, W, C) decoded images, C in {1, 3}
    labels.npy       int64 (N,) class indices into DatasetInfo.classes
    splits.npy       int8 (N,) split codes: 0 train, 1 val, 2 test
    samples.csv      index, sample_id (sha256 of the raw sample), label, split, origin
    quarantine.json  rejected samples: [{"origin": ..., "reason": ...}]
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from rooivalk import storage

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
INFO_FILE = "dataset.json"
QUARANTINE_FILE = "quarantine.json"


class DatasetInfo(BaseModel):
    version_id: str
    source: str
    format: str
    classes: list[str]
    image_shape: tuple[int, int, int]  # (H, W, C)
    num_samples: int
    split_sizes: dict[str, int]
    class_balance: dict[str, dict[str, int]]  # split -> class name -> count
    split_seed: int
    quarantined: int
    files: dict[str, str] = {}  # array file -> sha256, checked on load (empty in datasets older than the check)


@dataclass
class Dataset:
    info: DatasetInfo
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,)
    splits: np.ndarray  # int8 (N,)

    def subset(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of one split, in the stored (content-hash) order."""
        mask = self.splits == SPLIT_CODES[split]
        return self.images[mask], self.labels[mask]

    @property
    def num_classes(self) -> int:
        return len(self.info.classes)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def save_arrays(dataset_dir: str | Path, images: np.ndarray, labels: np.ndarray, splits: np.ndarray) -> dict[str, str]:
    """Write the arrays; returns {file: sha256} for the manifest (dataset.json) written after them."""
    return {
        "images.npy": storage.write_bytes(f"{dataset_dir}/images.npy", npy_bytes(images.astype(np.uint8, copy=False))),
        "labels.npy": storage.write_bytes(f"{dataset_dir}/labels.npy", npy_bytes(labels.astype(np.int64, copy=False))),
        "splits.npy": storage.write_bytes(f"{dataset_dir}/splits.npy", npy_bytes(splits.astype(np.int8, copy=False))),
    }


def save_info(dataset_dir: str | Path, info: DatasetInfo) -> str:
    return storage.write_text(f"{dataset_dir}/{INFO_FILE}", info.model_dump_json(indent=2))


def load_npy(uri: str, sha256: str | None = None) -> np.ndarray:
    """An .npy array; `sha256`: the digest its manifest recorded (a mismatch raises IntegrityError)."""
    array: np.ndarray = np.load(io.BytesIO(storage.read_bytes(uri, sha256=sha256)), allow_pickle=False)
    return array


def read_info(dataset_dir: str | Path) -> bytes:
    """dataset.json's bytes; its absence means no dataset (or an ingestion that did not finish)."""
    info_uri = f"{dataset_dir}/{INFO_FILE}"
    if not storage.exists(info_uri):
        raise storage.StorageError(f"{dataset_dir}: not a rooivalk dataset (no {INFO_FILE})")
    return storage.read_bytes(info_uri)


def load_dataset(dataset_dir: str | Path) -> Dataset:
    """Load a dataset artifact (local directory or s3:// prefix)."""
    info = DatasetInfo.model_validate_json(read_info(dataset_dir))
    return Dataset(
        info=info,
        images=load_npy(f"{dataset_dir}/images.npy", info.files.get("images.npy")),
        labels=load_npy(f"{dataset_dir}/labels.npy", info.files.get("labels.npy")),
        splits=load_npy(f"{dataset_dir}/splits.npy", info.files.get("splits.npy")),
    )


def load_quarantine(dataset_dir: str | Path) -> list[dict[str, Any]]:
    uri = f"{dataset_dir}/{QUARANTINE_FILE}"
    return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else []
