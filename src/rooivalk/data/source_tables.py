"""What the `sequences` and `table` readers share: a source of CSV/Parquet files read into frames,
cells parsed as text or numbers, the source's split column checked, classes sorted, and what a
reader reports: one quarantine entry type and one base error for a source it cannot read.

The functions that raise take the reader's own error class (a SourceFormatError), so that each
reader raises one type whichever helper found the problem.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_float_dtype, is_numeric_dtype

from rooivalk import storage
from rooivalk.data.dataset import SPLIT_CODES

SPLIT_COLUMN = "split"
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
_FORMAT_NAMES = {".csv": "CSV", ".parquet": "Parquet", ".pq": "Parquet", ".npz": "NPZ"}
_MISSING_TEXT = frozenset({"", "nan", "na", "n/a", "null", "none"})  # cells that mean "no value"


@dataclass(frozen=True)
class QuarantinedItem:
    """A rejected file, row or sequence; `row` is the 0-based data row of a table (the header is not
    counted: CSV line = row + 2) or the index of a sequence in an NPZ archive."""

    origin: str  # the file
    reason: str
    item_id: str | None = None  # the sequence id, or the row's `id` where a table has one
    row: int | None = None
    column: str | None = None  # a table column, or an NPZ array name

    def as_dict(self) -> dict[str, str | int]:
        """The entry as quarantine.json holds it; the id's key is "sequence_id" in both datasets' reports."""
        entry: dict[str, str | int] = {"origin": self.origin, "reason": self.reason}
        for key, value in (("sequence_id", self.item_id), ("row", self.row), ("column", self.column)):
            if value is not None:
                entry[key] = value
        return entry


class SourceFormatError(ValueError):
    """A source that cannot be read as a whole; the message names the file and column.

    `quarantined`: the entries collected before the failure, so that a caller can still report them.
    """

    def __init__(self, message: str, quarantined: Iterable[QuarantinedItem] = ()) -> None:
        super().__init__(message)
        self.quarantined = list(quarantined)


SIMULATION_META = "simulation.json"  # what the simulators write beside their data: not data, never quarantined


def source_files(
    source: str,
    suffixes: tuple[str, ...],
    what: str,
    quarantined: list[QuarantinedItem],
    error: type[SourceFormatError],
) -> list[str]:
    """`source` itself when it is a data file, else the data files under it (`suffixes`, sorted); other
    files are quarantined as "not a <what> file", hidden ones skipped."""
    if not storage.exists(source):
        raise error(f"data source not found: {source}")
    if source.lower().endswith(suffixes):
        return [source]
    names = list(dict.fromkeys(_FORMAT_NAMES[suffix] for suffix in suffixes))  # ["CSV", "Parquet", ...]
    formats = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
    base = source.rstrip("/")
    files: list[str] = []
    for uri in storage.list_uris(source):
        relative = PurePosixPath(uri[len(base) :].lstrip("/"))
        if any(part.startswith(".") for part in relative.parts) or relative.name == SIMULATION_META:
            continue  # hidden files (.DS_Store, editor swap files) and a simulator's settings are not data
        if uri.lower().endswith(suffixes):
            files.append(uri)
        else:
            reason = f"not a {what} file (extension {relative.suffix or '<none>'!r}; expected {formats})"
            quarantined.append(QuarantinedItem(uri, reason))
    if not files:
        raise error(f"{source}: no {formats} file")
    return files


def load_frame(uri: str, data: bytes, error: type[SourceFormatError]) -> pd.DataFrame:
    """A CSV (every cell as text) or Parquet file's frame."""
    try:
        if uri.lower().endswith(".csv"):
            # Every cell as text: ids keep their leading zeros, and a bad cell cannot change a column's type.
            return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        return pd.read_parquet(io.BytesIO(data))
    except Exception as failure:  # pandas and pyarrow raise many types on a malformed file
        raise error(f"{uri}: not a readable table: {type(failure).__name__}: {failure}") from None


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


def parse_numeric(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, bool mask of non-numeric cells); missing cells are NaN and not non-numeric."""
    if is_numeric_dtype(column.dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(column), dtype=bool)
    text = pd.Series(text_cells(column))
    missing = text.str.lower().isin(_MISSING_TEXT).to_numpy()
    values = pd.to_numeric(text.where(~missing, "nan"), errors="coerce").to_numpy(dtype=np.float64)
    return values, np.isnan(values) & ~missing


def is_numeric(column: pd.Series) -> bool:
    """Whether more of the column's non-empty cells parse as numbers than not (bool columns never do),
    so that one stray "abc" in a numeric column is reported against its row rather than changing the
    column's kind."""
    if is_numeric_dtype(column.dtype):
        return not is_bool_dtype(column.dtype)
    values, bad = parse_numeric(column)
    parsed = int((~np.isnan(values)).sum())
    return parsed > 0 and parsed > int(bad.sum())


def check_split_cells(uri: str, cells: list[str], error: type[SourceFormatError]) -> None:
    """Every non-empty cell of the split column names a split (train, val or test)."""
    for row, cell in enumerate(cells):
        if cell and cell not in SPLIT_CODES:
            raise error(f"{uri}: column {SPLIT_COLUMN!r} row {row}: split {cell!r} is not one of {list(SPLIT_CODES)}")


def sorted_classes(labels: Iterable[str]) -> list[str]:
    """Sorted class names; integer labels in numeric order ("2" before "10"), so that the class index
    of a source labelled 0..K-1 is its label."""
    names = set(labels)
    if all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)
