"""The versioned sequence dataset artifact (`data.format: sequences`) and its ingestion.

Layout of a sequence dataset directory (written through rooivalk.storage, dataset.json last):
    dataset.json     SequenceDatasetInfo: version id, classes, feature names, length, split sizes,
                     class balance, per-feature standardization (train split only), quarantine count
    sequences.npy    float32 (N, T, F): each sequence edge-padded or truncated to T = length
    lengths.npy      int64 (N,) real frames per sequence, min(T_i, T); frames past it are padding
    labels.npy       int64 (N,) class indices into SequenceDatasetInfo.classes
    splits.npy       int8 (N,) split codes: 0 train, 1 val, 2 test
    sequences.csv    index, sequence_id, label, split, origin
    quarantine.json  rejected files, rows and sequences: [{"origin", "reason", "sequence_id", "row", "column"}]

Sequences are stored in content-hash order and the version id hashes content, labels, the source's
splits and the settings, never file or row order: the same data gives the same dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel

import rooivalk.data.array_dataset as array_dataset
from rooivalk import storage
from rooivalk.data.dataset import SPLIT_CODES, read_info
from rooivalk.data.ingest import IngestError, class_balance
from rooivalk.data.sequence_reader import pad_or_truncate, read_sequences
from rooivalk.plan import SplitSpec

FORMAT = "sequences"
SEQUENCE_TABLE = "sequences.csv"
_ARRAY_FILES = {"sequences.npy": np.float32, "lengths.npy": np.int64, "labels.npy": np.int64, "splits.npy": np.int8}
_MIN_STD = 1e-8  # below this a feature is constant on train: centred, not scaled


class Standardization(BaseModel):
    """Per-feature statistics of the train split's real (unpadded) frames; training and export both
    apply them, so a deployed model sees features scaled exactly as in training."""

    mean: list[float]  # (F,)
    std: list[float]  # (F,), >= _MIN_STD (a constant feature keeps std 1)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(..., F) -> float32 (..., F), (x - mean) / std."""
        mean, std = np.asarray(self.mean, dtype=np.float32), np.asarray(self.std, dtype=np.float32)
        return ((x - mean) / std).astype(np.float32)


class SequenceDatasetInfo(BaseModel):
    format: str = FORMAT
    version_id: str
    source: str
    classes: list[str]
    feature_names: list[str]
    length: int  # T: frames per stored sequence
    num_sequences: int
    truncated: int  # sequences longer than `length`, cut to their first `length` frames
    split_sizes: dict[str, int]
    class_balance: dict[str, dict[str, int]]  # split -> class name -> count
    split_seed: int
    split_from_source: bool  # splits taken from the source's split column, not drawn by the seed
    standardization: Standardization
    quarantined: int
    files: dict[str, str] = {}  # array file -> sha256, checked on load


@dataclass
class SequenceDataset:
    info: SequenceDatasetInfo
    sequences: np.ndarray  # float32 (N, T, F)
    lengths: np.ndarray  # int64 (N,)
    labels: np.ndarray  # int64 (N,)
    splits: np.ndarray  # int8 (N,)

    @property
    def num_classes(self) -> int:
        return len(self.info.classes)

    @property
    def num_features(self) -> int:
        return len(self.info.feature_names)

    def split_mask(self, split: str) -> np.ndarray:
        return np.asarray(self.splits == SPLIT_CODES[split])

    def subset(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sequences (n, T, F), lengths (n,), labels (n,)) of one split, in stored order."""
        mask = self.split_mask(split)
        return self.sequences[mask], self.lengths[mask], self.labels[mask]


@dataclass
class SequenceIngestResult:
    info: SequenceDatasetInfo
    quarantined: list[dict[str, str | int]]
    metrics: dict[str, float] = field(default_factory=dict)


def standardization_stats(sequences: np.ndarray, lengths: np.ndarray, train: np.ndarray) -> Standardization:
    """Mean and std per feature over the real frames (t < lengths[i]) of the train sequences only:
    padding would weight short sequences' last frames, and val/test must not leak into training."""
    steps = np.arange(sequences.shape[1])
    real = steps[None, :] < lengths[:, None]  # bool (N, T)
    frames = sequences[real & train[:, None]].astype(np.float64)  # (M, F), M real train frames
    if len(frames) == 0:
        raise IngestError("no train frames to compute the standardization from")
    std = frames.std(axis=0)
    return Standardization(mean=frames.mean(axis=0).tolist(), std=np.where(std < _MIN_STD, 1.0, std).tolist())


def content_id(sequence: np.ndarray) -> str:
    """sha256 of a (T, F) float32 sequence's shape and values: its identity, whatever its id or row order."""
    frames = np.ascontiguousarray(sequence, dtype=np.float32)
    return storage.sha256_bytes(f"{frames.shape}".encode() + frames.tobytes())


def ingest_sequences(
    source: str,
    dataset_dir: str,
    length: int | None = None,
    split: SplitSpec | None = None,
    label_column: str = "label",
    step_column: str | None = None,
    feature_columns: list[str] | None = None,
    quarantine_uri: str | None = None,
) -> SequenceIngestResult:
    """Read, validate, pad or truncate, split and version `source` as a sequence dataset at `dataset_dir`.

    `length`: frames per stored sequence (None: the longest sequence's). `split`: fractions, seed and
    stratification; a source with a split column keeps its splits unless `split.use_source_test` is false.
    """
    split = split or SplitSpec()
    if length is not None and length < 1:
        raise IngestError(f"{source}: sequence length must be at least 1, got {length}")
    read = array_dataset.read_source(
        lambda: read_sequences(source, label_column, step_column, feature_columns), dataset_dir, quarantine_uri
    )
    ids = [content_id(sequence) for sequence in read.sequences]
    order = sorted(range(len(ids)), key=lambda i: (ids[i], read.labels[i], read.sequence_ids[i]))
    length = length if length is not None else max(len(sequence) for sequence in read.sequences)
    sequences, lengths = pad_or_truncate([read.sequences[i] for i in order], length)
    classes = read.classes
    class_index = {name: index for index, name in enumerate(classes)}
    labels = np.array([class_index[read.labels[i]] for i in order], dtype=np.int64)
    codes, from_source = array_dataset.split_codes(read.splits, order, labels, classes, split, source, "sequences")
    source_splits = read.splits if from_source and read.splits is not None else [""] * len(ids)
    keys = [(ids[i], read.labels[i], source_splits[i]) for i in order]
    settings = {"format": FORMAT, "features": read.feature_names, "length": length}
    info = SequenceDatasetInfo(
        version_id=array_dataset.content_version_id(keys, settings, split),
        source=source,
        classes=classes,
        feature_names=read.feature_names,
        length=length,
        num_sequences=len(order),
        truncated=sum(len(sequence) > length for sequence in read.sequences),
        split_sizes={name: int((codes == code).sum()) for name, code in SPLIT_CODES.items()},
        class_balance=class_balance(labels, codes, classes),
        split_seed=split.seed,
        split_from_source=from_source,
        standardization=standardization_stats(sequences, lengths, codes == SPLIT_CODES["train"]),
        quarantined=len(read.quarantined),
    )
    table = array_dataset.index_csv("sequence_id", read.sequence_ids, read.labels, read.origins, order, codes)
    storage.write_text(f"{dataset_dir}/{SEQUENCE_TABLE}", table)
    save_sequence_dataset(dataset_dir, SequenceDataset(info, sequences, lengths, labels, codes))
    metrics = {
        "num_sequences": float(info.num_sequences),
        "num_classes": float(len(classes)),
        "num_features": float(len(info.feature_names)),
        "num_quarantined": float(info.quarantined),
        **{f"{name}_size": float(size) for name, size in info.split_sizes.items()},
    }
    return SequenceIngestResult(info, [entry.as_dict() for entry in read.quarantined], metrics)


def save_sequence_dataset(dataset_dir: str, dataset: SequenceDataset) -> None:
    """Arrays first, dataset.json last: a directory without dataset.json is an incomplete ingestion."""
    arrays = (dataset.sequences, dataset.lengths, dataset.labels, dataset.splits)
    array_dataset.save_arrays(dataset_dir, dataset.info, _ARRAY_FILES, arrays)


def is_sequence_dataset(dataset_dir: str) -> bool:
    return array_dataset.has_format(dataset_dir, FORMAT)


def load_sequence_dataset(dataset_dir: str) -> SequenceDataset:
    """Load a sequence dataset artifact (local directory or s3:// prefix); array digests are checked."""
    info = SequenceDatasetInfo.model_validate_json(read_info(dataset_dir))
    return SequenceDataset(info, *array_dataset.load_arrays(dataset_dir, _ARRAY_FILES, info.files))
