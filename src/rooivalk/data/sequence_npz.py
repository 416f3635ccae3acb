"""The NPZ layout of the `sequences` reader: padded arrays with per-sequence lengths.

Arrays: `X` (N, T, F) numeric, `y` (N,) labels (int or str), and optionally `lengths` (N,) int
(default T: every sequence fills X), `split` (N,) str, `sequence_id` (N,) (default "<file>#<index>")
and `feature_names` (F,) (default f0..f{F-1}). Only X[i, :lengths[i]] is read: what lies past a
sequence's length is padding and is never checked.
"""

from __future__ import annotations

import io
from pathlib import PurePosixPath

import numpy as np

from rooivalk.data.dataset import SPLIT_CODES
from rooivalk.data.sequence_types import FileSequences, SequenceFormatError
from rooivalk.data.source_tables import QuarantinedItem, text_cells

OPTIONAL_ARRAYS = ("lengths", "split", "sequence_id", "feature_names")


def _load_arrays(uri: str, data: bytes) -> dict[str, np.ndarray]:
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as error:  # numpy raises several types on a corrupt archive
        raise SequenceFormatError(f"{uri}: not a readable NPZ archive: {type(error).__name__}: {error}") from None
    arrays: dict[str, np.ndarray] = {}
    with archive:
        for name in archive.files:
            try:
                arrays[name] = np.asarray(archive[name])
            except ValueError as error:  # an object array: pickles are never loaded
                raise SequenceFormatError(f"{uri}: array {name!r} cannot be read: {error}") from None
    return arrays


def _checked_x(uri: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    for name, what in (("X", "sequence array"), ("y", "label array")):
        if name not in arrays:
            raise SequenceFormatError(f"{uri}: {what} {name!r} missing; arrays: {sorted(arrays)}")
    x = arrays["X"]
    if x.ndim != 3 or not np.issubdtype(x.dtype, np.number):
        raise SequenceFormatError(f"{uri}: array 'X' must be numeric (N, T, F), got {x.dtype} {x.shape}")
    if x.shape[2] == 0:
        raise SequenceFormatError(f"{uri}: array 'X' has no features (shape {x.shape})")
    for name in ("y", *OPTIONAL_ARRAYS):
        expected = x.shape[2] if name == "feature_names" else x.shape[0]
        if name in arrays and arrays[name].shape != (expected,):
            raise SequenceFormatError(f"{uri}: array {name!r} has shape {arrays[name].shape}, expected ({expected},)")
    if "lengths" in arrays and not np.issubdtype(arrays["lengths"].dtype, np.integer):
        raise SequenceFormatError(f"{uri}: array 'lengths' must hold integers, got {arrays['lengths'].dtype}")
    return x


def _split_cells(uri: str, arrays: dict[str, np.ndarray]) -> list[str] | None:
    if "split" not in arrays:
        return None
    cells = text_cells(arrays["split"])
    for index, cell in enumerate(cells):
        if cell and cell not in SPLIT_CODES:
            raise SequenceFormatError(f"{uri}: array 'split' index {index}: {cell!r} is not one of {list(SPLIT_CODES)}")
    return cells


def _frames(
    uri: str, x: np.ndarray, index: int, length: int, sid: str, features: list[str]
) -> np.ndarray | QuarantinedItem:
    """float32 (length, F), or the sequence's first NaN or inf frame value."""
    block = x[index, :length].astype(np.float64)
    bad = ~np.isfinite(block)
    if not bad.any():
        return block.astype(np.float32)
    step, f = divmod(int(bad.argmax()), block.shape[1])
    kind = "NaN" if np.isnan(block[step, f]) else "infinite"
    more = int(bad.sum()) - 1
    reason = f"{kind} value at step {step} in feature {features[f]!r}" + (f" ({more} more bad cells)" if more else "")
    return QuarantinedItem(uri, reason, sid, index, features[f])


def _sequence_problem(
    uri: str, index: int, sid: str, length: int, steps: int, cells: dict[str, str]
) -> QuarantinedItem | None:
    if not sid:
        return QuarantinedItem(uri, "missing sequence_id", None, index, "sequence_id")
    if length == 0:
        return QuarantinedItem(uri, "empty sequence (length 0)", sid, index, "lengths")
    if not 0 < length <= steps:
        return QuarantinedItem(uri, f"length {length} outside 1..{steps} (X has {steps} steps)", sid, index, "lengths")
    for name, cell in cells.items():
        if not cell:
            what = "label" if name == "y" else name
            return QuarantinedItem(uri, f"missing {what}", sid, index, name)
    return None


def read_npz(uri: str, data: bytes) -> FileSequences:
    """The valid sequences of one NPZ archive; bad ones quarantined with their index and array."""
    arrays = _load_arrays(uri, data)
    x = _checked_x(uri, arrays)
    count, steps, width = x.shape
    lengths = arrays["lengths"].astype(np.int64) if "lengths" in arrays else np.full(count, steps, dtype=np.int64)
    labels = text_cells(arrays["y"])
    splits = _split_cells(uri, arrays)
    name = PurePosixPath(uri).name
    ids = text_cells(arrays["sequence_id"]) if "sequence_id" in arrays else [f"{name}#{i}" for i in range(count)]
    features = text_cells(arrays["feature_names"]) if "feature_names" in arrays else [f"f{k}" for k in range(width)]
    out = FileSequences(uri, features, has_splits=splits is not None)
    for index in range(count):
        cells = {"y": labels[index], **({"split": splits[index]} if splits is not None else {})}
        problem = _sequence_problem(uri, index, ids[index], int(lengths[index]), steps, cells)
        frames = problem or _frames(uri, x, index, int(lengths[index]), ids[index], features)
        if isinstance(frames, QuarantinedItem):
            out.quarantined.append(frames)
        else:
            out.add(frames, labels[index], ids[index], splits[index] if splits is not None else "")
    return out
