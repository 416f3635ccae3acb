"""The `table` reader: labelled rows of numeric and categorical features, read into memory.

A source is one CSV or Parquet file or a folder of them with the same columns (read in sorted
order). Columns: a label column, optionally `split` (train/val/test) and `id`, and features: the
listed ones, or else every other column. A feature is categorical when `categorical_columns` lists
it or when it is not numeric: a column counts as numeric when more of its non-empty cells, over all
files, parse as numbers than not (rooivalk.data.source_tables.is_numeric), so that one stray "abc" is
quarantined against its row instead of turning the column into categories; bool columns are
categorical. A missing categorical value is a category of its own, MISSING_CATEGORY.
A row with a missing label (or split, where the source has a split column) or a bad numeric cell
(missing, NaN, inf, non-numeric) is quarantined with its file, row and column; nothing else is
dropped. A problem with the whole source raises TableFormatError naming the file and column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from rooivalk import storage
from rooivalk.data.source_tables import (
    SPLIT_COLUMN,
    TABLE_SUFFIXES,
    QuarantinedItem,
    SourceFormatError,
    check_split_cells,
    is_numeric,
    load_frame,
    parse_numeric,
    sorted_classes,
    source_files,
    text_cells,
)

ID_COLUMN = "id"
MISSING_CATEGORY = "<missing>"

__all__ = [
    "ID_COLUMN",
    "MISSING_CATEGORY",
    "TableFormatError",
    "TableReadResult",
    "category_cells",
    "category_matrix",
    "numeric_matrix",
    "read_table_rows",
]


class TableFormatError(SourceFormatError):
    """A table source that cannot be read as a whole; the message names the file and column.

    `quarantined`: the entries collected before the failure, so that a caller can still report them.
    """


@dataclass
class TableReadResult:
    """The valid rows of a source, in file then row order. A quarantine entry's `item_id` is the
    row's id (the `id` column), where it has one."""

    numeric_names: list[str]
    categorical_names: list[str]
    numeric: list[np.ndarray] = field(default_factory=list)  # per file: float32 (n, F_num), all finite
    categorical: list[np.ndarray] = field(default_factory=list)  # per file: object (n, F_cat) of str
    labels: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # the id column, or "<file name>#<row>" without one
    origins: list[str] = field(default_factory=list)  # the file each row came from
    splits: list[str] | None = None  # the source's split per row, None when the source has none
    quarantined: list[QuarantinedItem] = field(default_factory=list)

    @property
    def features(self) -> np.ndarray:
        """float32 (N, F_num) numeric features of every row."""
        return np.concatenate(self.numeric) if self.numeric else np.zeros((0, len(self.numeric_names)), np.float32)

    @property
    def categories(self) -> np.ndarray:
        """object (N, F_cat): every row's category name per categorical feature."""
        empty = np.empty((0, len(self.categorical_names)), dtype=object)
        return np.concatenate(self.categorical) if self.categorical else empty

    @property
    def classes(self) -> list[str]:
        return sorted_classes(self.labels)


def category_cells(column: pd.Series | np.ndarray) -> list[str]:
    """A categorical column's cells as category names (stripped text, MISSING_CATEGORY where empty);
    ingestion and inference both name categories through it, so a value reads the same in both."""
    return [cell or MISSING_CATEGORY for cell in text_cells(column)]


def category_matrix(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """object (R, len(names)): the category name of each row's cell in each of these columns."""
    cells = [category_cells(frame[name]) for name in names]
    return np.array(cells, dtype=object).T.reshape(len(frame), len(names))


def numeric_matrix(frame: pd.DataFrame, names: list[str]) -> tuple[np.ndarray, list[tuple[str, str] | None]]:
    """(float64 (R, len(names)) values, per row None or the (column, reason) of its first bad cell:
    missing, NaN, inf or non-numeric, in column order)."""
    parsed = [parse_numeric(frame[name]) for name in names]
    values = _matrix([v for v, _ in parsed], len(frame))
    non_numeric = _matrix([b for _, b in parsed], len(frame)).astype(bool)
    with np.errstate(over="ignore"):
        bad = non_numeric | ~np.isfinite(values.astype(np.float32))  # (R, F); 1e39 is inf once stored
    problems: list[tuple[str, str] | None] = [None] * len(frame)
    for row in np.flatnonzero(bad.any(axis=1)):
        f = int(bad[row].argmax())
        column, value = names[f], values[row, f]
        if non_numeric[row, f]:
            reason = f"non-numeric value {frame[column].iloc[row]!r} in numeric column {column!r}"
        elif np.isnan(value):
            reason = f"missing or NaN value in column {column!r}"
        else:
            what = "infinite value" if np.isinf(value) else f"value {value:g} beyond float32"
            reason = f"{what} in column {column!r}"
        more = int(bad[row].sum()) - 1
        problems[row] = (column, reason + (f" ({more} more bad cells)" if more else ""))
    return values, problems


def read_table_rows(
    source: str,
    label_column: str = "label",
    feature_columns: list[str] | None = None,
    categorical_columns: list[str] | None = None,
) -> TableReadResult:
    """Read every row of `source` (a file or a folder; local or s3://).

    Raises TableFormatError for whole-source problems; when it is raised because no row is left,
    the error's `quarantined` holds every entry so that the caller can still report them.
    """
    quarantined: list[QuarantinedItem] = []
    uris = source_files(source, TABLE_SUFFIXES, "table", quarantined, TableFormatError)
    frames = [(uri, load_frame(uri, storage.read_bytes(uri), TableFormatError)) for uri in uris]
    numeric, categorical = _feature_kinds(frames, label_column, feature_columns, categorical_columns or [])
    result = TableReadResult(numeric, categorical, quarantined=quarantined)
    if SPLIT_COLUMN in frames[0][1].columns:
        result.splits = []
    for uri, frame in frames:
        _read_rows(uri, frame, label_column, result)
    if not result.labels:
        raise TableFormatError(f"{source}: no rows left ({len(quarantined)} quarantined)", quarantined)
    return result


def _feature_kinds(
    frames: list[tuple[str, pd.DataFrame]], label: str, listed: list[str] | None, categorical: list[str]
) -> tuple[list[str], list[str]]:
    """(numeric feature names, categorical feature names), each in the first file's column order."""
    first_uri, first = frames[0]
    columns = [str(name) for name in first.columns]
    for uri, frame in frames[1:]:
        missing, extra = sorted(set(columns) - set(frame.columns)), sorted(set(frame.columns) - set(columns))
        if missing or extra:
            raise TableFormatError(
                f"{uri}: columns differ from {first_uri}: missing {missing}, extra {extra}; "
                "every file needs the same columns"
            )
    if label not in columns:
        raise TableFormatError(f"{first_uri}: label column {label!r} missing; columns: {columns}")
    reserved = {label, SPLIT_COLUMN, ID_COLUMN} & set(columns)
    for what, names in (("feature", listed or []), ("categorical", categorical)):
        absent = [name for name in names if name not in columns]
        if absent:
            raise TableFormatError(f"{first_uri}: {what} column(s) {absent} not found; columns: {columns}")
        clash = [name for name in names if name in reserved]
        if clash:
            raise TableFormatError(f"{first_uri}: column(s) {clash} cannot be features (label, split or id)")
    features = list(listed) if listed is not None else [name for name in columns if name not in reserved]
    if not features:
        raise TableFormatError(f"{first_uri}: no feature columns besides {sorted(reserved)}")
    unused = [name for name in categorical if name not in features]
    if unused:
        raise TableFormatError(f"{first_uri}: categorical column(s) {unused} are not among the features {features}")

    def numeric(name: str) -> bool:  # over all files' cells
        return name not in categorical and is_numeric(pd.concat([frame[name] for _, frame in frames]))

    kinds = {name: numeric(name) for name in features}
    return [name for name in features if kinds[name]], [name for name in features if not kinds[name]]


def _matrix(columns: list[np.ndarray], rows: int) -> np.ndarray:
    """(rows, len(columns)) from per-column (rows,) arrays; a table may have no columns of a kind."""
    return np.stack(columns, axis=1) if columns else np.zeros((rows, 0))


def _read_rows(uri: str, frame: pd.DataFrame, label: str, result: TableReadResult) -> None:
    """Append the valid rows of one file to `result`; quarantine the rest."""
    values, problems = numeric_matrix(frame, result.numeric_names)
    labels = text_cells(frame[label])
    splits = text_cells(frame[SPLIT_COLUMN]) if result.splits is not None else None
    if splits is not None:
        check_split_cells(uri, splits, TableFormatError)
    given_ids = text_cells(frame[ID_COLUMN]) if ID_COLUMN in frame.columns else [""] * len(frame)
    name = PurePosixPath(uri).name
    keep: list[int] = []
    for row in range(len(frame)):
        problem = problems[row]
        if not labels[row]:
            problem = (label, "missing label")
        elif splits is not None and not splits[row]:
            problem = (SPLIT_COLUMN, "missing split")
        if problem is None:
            keep.append(row)
        else:
            column, reason = problem
            result.quarantined.append(QuarantinedItem(uri, reason, given_ids[row] or None, row, column))
    categorical = category_matrix(frame, result.categorical_names)  # object (R, F_cat)
    result.numeric.append(values[keep].astype(np.float32))
    result.categorical.append(categorical[keep])
    result.labels += [labels[row] for row in keep]
    result.ids += [given_ids[row] or f"{name}#{row}" for row in keep]
    result.origins += [uri] * len(keep)
    if result.splits is not None and splits is not None:
        result.splits += [splits[row] for row in keep]
