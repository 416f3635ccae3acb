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

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel

from rooivalk import storage
from rooivalk.data.dataset import INFO_FILE, QUARANTINE_FILE, SPLIT_CODES, load_npy, npy_bytes, read_info
from rooivalk.data.ingest import IngestError, class_balance, split_samples
from rooivalk.data.sequence_reader import SequenceFormatError, SequenceReadResult, pad_or_truncate, read_sequences
from rooivalk.plan import SplitSpec

FORMAT = "sequences"
SEQUENCE_TABLE = "sequences.csv"
_ARRAY_FILES = ("sequences.npy", "lengths.npy", "labels.npy", "splits.npy")
_SPLIT_NAMES = {code: name for name, code in SPLIT_CODES.items()}
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


def _version_id(keys: list[tuple[str, str, str]], features: list[str], length: int, split: SplitSpec) -> str:
    """'ds-' + 16 hex of sha256 over sorted (content id, label, source split) and the settings."""
    digest = hashlib.sha256()
    for key in sorted(keys):
        digest.update(("\t".join(key) + "\n").encode())
    settings = {
        "format": FORMAT,
        "features": features,
        "length": length,
        "split": [split.train, split.val, split.test, split.seed, split.stratified, split.use_source_test],
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return f"ds-{digest.hexdigest()[:16]}"


def _split_codes(read: SequenceReadResult, order: list[int], labels: np.ndarray, classes: list[str],
                 split: SplitSpec, source: str) -> tuple[np.ndarray, bool]:  # fmt: skip
    """Split codes in stored order, and whether they came from the source's split column."""
    if read.splits is None or not split.use_source_test:
        return split_samples(labels, np.zeros(len(labels), dtype=bool), classes, split, source), False
    codes = np.array([SPLIT_CODES[read.splits[i]] for i in order], dtype=np.int8)
    for needed in ("train", "val"):
        if not (codes == SPLIT_CODES[needed]).any():
            raise IngestError(
                f"{source}: column 'split' gives no {needed!r} sequences; training needs train and val "
                "(add them, or set split.use_source_test: false to split by the fractions)"
            )
    return codes, True


def _sequences_csv(read: SequenceReadResult, order: list[int], codes: np.ndarray) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "sequence_id", "label", "split", "origin"])
    for index, (i, code) in enumerate(zip(order, codes, strict=True)):
        writer.writerow([index, read.sequence_ids[i], read.labels[i], _SPLIT_NAMES[int(code)], read.origins[i]])
    return buffer.getvalue()


def _write_quarantine(entries: list[dict[str, str | int]], dataset_dir: str, quarantine_uri: str | None) -> None:
    report = json.dumps(entries, indent=2)
    for uri in (f"{dataset_dir}/{QUARANTINE_FILE}", quarantine_uri):
        if uri:
            storage.write_text(uri, report)


def _read(source: str, dataset_dir: str, quarantine_uri: str | None,
          columns: tuple[str, str | None, list[str] | None]) -> SequenceReadResult:  # fmt: skip
    """The source read; the quarantine report written before anything can fail, so nothing is lost.
    `columns`: (label column, step column, feature columns) as read_sequences takes them."""
    try:
        read = read_sequences(source, *columns)
    except SequenceFormatError as error:
        if error.quarantined:
            _write_quarantine([entry.as_dict() for entry in error.quarantined], dataset_dir, quarantine_uri)
        raise IngestError(str(error)) from None
    _write_quarantine([entry.as_dict() for entry in read.quarantined], dataset_dir, quarantine_uri)
    return read


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
    read = _read(source, dataset_dir, quarantine_uri, (label_column, step_column, feature_columns))
    ids = [content_id(sequence) for sequence in read.sequences]
    order = sorted(range(len(ids)), key=lambda i: (ids[i], read.labels[i], read.sequence_ids[i]))
    length = length if length is not None else max(len(sequence) for sequence in read.sequences)
    sequences, lengths = pad_or_truncate([read.sequences[i] for i in order], length)
    classes = read.classes
    class_index = {name: index for index, name in enumerate(classes)}
    labels = np.array([class_index[read.labels[i]] for i in order], dtype=np.int64)
    codes, from_source = _split_codes(read, order, labels, classes, split, source)
    source_splits = read.splits if from_source and read.splits is not None else [""] * len(ids)
    keys = [(ids[i], read.labels[i], source_splits[i]) for i in order]
    info = SequenceDatasetInfo(
        version_id=_version_id(keys, read.feature_names, length, split),
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
    storage.write_text(f"{dataset_dir}/{SEQUENCE_TABLE}", _sequences_csv(read, order, codes))
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
    arrays: tuple[np.ndarray, ...] = (
        dataset.sequences.astype(np.float32, copy=False),
        dataset.lengths.astype(np.int64, copy=False),
        dataset.labels.astype(np.int64, copy=False),
        dataset.splits.astype(np.int8, copy=False),
    )
    dataset.info.files = {
        file: storage.write_bytes(f"{dataset_dir}/{file}", npy_bytes(array))
        for file, array in zip(_ARRAY_FILES, arrays, strict=True)
    }
    storage.write_text(f"{dataset_dir}/{INFO_FILE}", dataset.info.model_dump_json(indent=2))


def is_sequence_dataset(dataset_dir: str) -> bool:
    uri = f"{dataset_dir}/{INFO_FILE}"
    return storage.exists(uri) and json.loads(storage.read_bytes(uri)).get("format") == FORMAT


def load_sequence_dataset(dataset_dir: str) -> SequenceDataset:
    """Load a sequence dataset artifact (local directory or s3:// prefix); array digests are checked."""
    info = SequenceDatasetInfo.model_validate_json(read_info(dataset_dir))
    sequences, lengths, labels, splits = (
        load_npy(f"{dataset_dir}/{file}", info.files.get(file)) for file in _ARRAY_FILES
    )
    return SequenceDataset(info, sequences, lengths, labels, splits)
