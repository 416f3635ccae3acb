"""Types shared by the sequence readers (rooivalk.data.sequence_reader, rooivalk.data.sequence_npz)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pandas.api.types import is_float_dtype


class SequenceFormatError(ValueError):
    """A sequence source that cannot be read as a whole; the message names the file and column.

    `quarantined`: the entries collected before the failure, so that a caller can still report them.
    """

    def __init__(self, message: str, quarantined: Iterable[SequenceQuarantine] = ()) -> None:
        super().__init__(message)
        self.quarantined = list(quarantined)


@dataclass(frozen=True)
class SequenceQuarantine:
    """A rejected file, row or sequence; `row` is the 0-based data row of a table (the header is not
    counted: CSV line = row + 2) or the index of the sequence in an NPZ archive."""

    origin: str  # the file
    reason: str
    sequence_id: str | None = None
    row: int | None = None
    column: str | None = None  # a table column, or an NPZ array name

    def as_dict(self) -> dict[str, str | int]:
        entry: dict[str, str | int] = {"origin": self.origin, "reason": self.reason}
        for key in ("sequence_id", "row", "column"):
            value = getattr(self, key)
            if value is not None:
                entry[key] = value
        return entry


@dataclass
class FileSequences:
    """The valid sequences of one file, in the file's own feature order."""

    uri: str
    features: list[str]
    has_splits: bool
    sequences: list[np.ndarray] = field(default_factory=list)  # float32 (T_i, F)
    labels: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)  # "" when the file has no split column
    quarantined: list[SequenceQuarantine] = field(default_factory=list)

    def add(self, frames: np.ndarray, label: str, sequence_id: str, split: str) -> None:
        self.sequences.append(frames)
        self.labels.append(label)
        self.ids.append(sequence_id)
        self.splits.append(split)


def text_cells(values: pd.Series | np.ndarray) -> list[str]:
    """Each cell as stripped text, "" where missing. Integer-valued floats print as integers (pandas
    reads an int column with gaps as float), so that label 3 is "3" in every file, never "3.0"."""
    column = pd.Series(values)
    if is_float_dtype(column.dtype):
        present = column.dropna()
        if len(present) and bool((present == present.round()).all()) and bool(np.isfinite(present).all()):
            column = column.astype("Int64")
    cells: list[str] = column.astype("string").fillna("").str.strip().tolist()
    return cells
