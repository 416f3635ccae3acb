"""The `sequences` reader: labelled variable-length sequences of feature frames, read into memory.

A source is one file or a folder of files of the same layout (read in sorted order):
- CSV or Parquet in long form, one row per time step: `sequence_id`, a label column, optionally
  `split` and a step column, and feature columns (rooivalk.data.sequence_table);
- NPZ: `X` (N, T, F), `lengths` (N,), `y` (N,), optionally `split` and `sequence_id`
  (rooivalk.data.sequence_npz).
Files are merged in the first file's feature order; every file must have the same features, and
either all files or none have a split column. A sequence id seen in an earlier file is quarantined.
A sequence with a bad value (NaN, inf, non-numeric, missing), no frames, a missing label or rows that
disagree on label or split is quarantined whole with its file, id, row and column; nothing else is
dropped. A problem with the whole source raises SequenceFormatError naming the file and column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rooivalk import storage
from rooivalk.data.sequence_npz import read_npz
from rooivalk.data.sequence_table import ID_COLUMN, TableColumns, read_table
from rooivalk.data.sequence_types import FileSequences, SequenceFormatError
from rooivalk.data.source_tables import SPLIT_COLUMN, TABLE_SUFFIXES, QuarantinedItem, sorted_classes, source_files

SEQUENCE_SUFFIXES = (*TABLE_SUFFIXES, ".npz")

__all__ = ["SequenceFormatError", "SequenceReadResult", "pad_or_truncate", "read_sequences"]


@dataclass
class SequenceReadResult:
    sequences: list[np.ndarray]  # float32 (T_i, F), T_i >= 1, all finite
    labels: list[str]
    sequence_ids: list[str]
    origins: list[str]  # the file each sequence came from
    splits: list[str] | None  # the source's split per sequence, None when the source has none
    feature_names: list[str]  # F names, the column order of every sequence
    quarantined: list[QuarantinedItem] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return sorted_classes(self.labels)


def read_sequences(
    source: str,
    label_column: str = "label",
    step_column: str | None = None,
    feature_columns: list[str] | None = None,
) -> SequenceReadResult:
    """Read every sequence of `source` (a file or a folder; local or s3://).

    `step_column`: the column that orders a sequence's rows; None uses `step` where a file has it.
    Raises SequenceFormatError for whole-source problems; when it is raised because no sequence is
    left, the error's `quarantined` holds every entry so that the caller can still report them.
    """
    columns = TableColumns(label_column, step_column, feature_columns)
    quarantined: list[QuarantinedItem] = []
    parts: list[FileSequences] = []
    for uri in source_files(source, SEQUENCE_SUFFIXES, "sequence", quarantined, SequenceFormatError):
        data = storage.read_bytes(uri)
        part = read_npz(uri, data) if uri.lower().endswith(".npz") else read_table(uri, data, columns)
        quarantined += part.quarantined
        parts.append(part)
    result = _merge(parts, quarantined)
    if not result.sequences:
        raise SequenceFormatError(
            f"{source}: no sequences left ({len(quarantined)} quarantined)", quarantined=result.quarantined
        )
    return result


def pad_or_truncate(sequences: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """(X float32 (N, length, F), lengths int64 (N,) of real frames, min(T_i, length)).

    Short sequences are padded with their last frame, long ones keep their first `length` frames.
    Edge padding rather than zeros: a zero frame is a jump to a point no hand or target ever visits,
    which standardization turns into a large outlier; a repeated frame is a plausible "held still".
    Truncation keeps the start because sequences are recorded from their onset (a sign, a track).
    """
    if length < 1:
        raise ValueError(f"sequence length must be at least 1, got {length}")
    features = sequences[0].shape[1] if sequences else 0
    out = np.empty((len(sequences), length, features), dtype=np.float32)
    lengths = np.empty(len(sequences), dtype=np.int64)
    for index, sequence in enumerate(sequences):
        if sequence.ndim != 2 or sequence.shape[0] == 0 or sequence.shape[1] != features:
            raise ValueError(f"sequence {index}: shape {sequence.shape}, expected (T >= 1, {features})")
        kept = min(len(sequence), length)
        out[index, :kept] = sequence[:kept]
        out[index, kept:] = sequence[kept - 1]  # (F,) broadcast over the padded steps
        lengths[index] = kept
    return out, lengths


def _merge(parts: list[FileSequences], quarantined: list[QuarantinedItem]) -> SequenceReadResult:
    """All files' sequences in the first file's feature order; a repeated id is quarantined."""
    first = parts[0]
    with_splits = [part.uri for part in parts if part.has_splits]
    if with_splits and len(with_splits) != len(parts):
        lacking = next(part.uri for part in parts if not part.has_splits)
        raise SequenceFormatError(f"{lacking}: no {SPLIT_COLUMN!r} column, but {with_splits[0]} has one")
    result = SequenceReadResult([], [], [], [], [] if with_splits else None, first.features, quarantined)
    seen: dict[str, str] = {}
    for part in parts:
        order = _feature_order(part, first)
        for frames, label, sid, split in zip(part.sequences, part.labels, part.ids, part.splits, strict=True):
            if sid in seen:
                quarantined.append(QuarantinedItem(part.uri, f"sequence id also in {seen[sid]}", sid, None, ID_COLUMN))
                continue
            seen[sid] = part.uri
            result.sequences.append(frames[:, order])
            result.labels.append(label)
            result.sequence_ids.append(sid)
            result.origins.append(part.uri)
            if result.splits is not None:
                result.splits.append(split)
    return result


def _feature_order(part: FileSequences, first: FileSequences) -> np.ndarray:
    """Column indices that put `part`'s features in `first`'s order."""
    if len(part.features) != len(first.features):
        raise SequenceFormatError(
            f"{part.uri}: {len(part.features)} feature columns {part.features}, but {first.uri} has "
            f"{len(first.features)} {first.features}; every file needs the same features"
        )
    absent = [name for name in first.features if name not in part.features]
    if absent:
        raise SequenceFormatError(f"{part.uri}: feature column(s) {absent} of {first.uri} missing")
    return np.asarray([part.features.index(name) for name in first.features], dtype=np.int64)
