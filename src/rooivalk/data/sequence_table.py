"""The long-form table layout of the `sequences` reader: CSV or Parquet, one row per time step.

Columns: `sequence_id`, a label column, optionally `split` (train/val/test, equal on all of a
sequence's rows) and a step column that orders a sequence's rows (otherwise they keep file order),
and feature columns: the listed ones, or else every other numeric column. A column counts as numeric
when more of its non-empty cells parse as numbers than not, so that one stray "abc" in a numeric
column is reported against its row rather than silently dropping the column. A sequence with a bad
cell, a missing label (or split, where the file has a split column), a missing or repeated step, or
rows that disagree on label or split is quarantined whole, naming the row and column of the first
problem; a row without a sequence id is quarantined alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rooivalk.data.sequence_types import FileSequences, SequenceFormatError
from rooivalk.data.source_tables import (
    SPLIT_COLUMN,
    QuarantinedItem,
    check_split_cells,
    is_numeric,
    load_frame,
    parse_numeric,
    text_cells,
)

ID_COLUMN = "sequence_id"
DEFAULT_STEP_COLUMN = "step"


@dataclass(frozen=True)
class TableColumns:
    label: str
    step: str | None  # None: "step" when a file has it
    features: list[str] | None  # None: every other numeric column


def _feature_names(uri: str, frame: pd.DataFrame, reserved: set[str], listed: list[str] | None) -> list[str]:
    if listed is not None:
        absent = [name for name in listed if name not in frame.columns]
        if absent:
            raise SequenceFormatError(f"{uri}: feature column(s) {absent} not found; columns: {list(frame.columns)}")
        clash = [name for name in listed if name in reserved]
        if clash:
            raise SequenceFormatError(f"{uri}: column(s) {clash} cannot be features (id, label, split or step)")
        return list(listed)
    names = [str(name) for name in frame.columns if name not in reserved and is_numeric(frame[name])]
    if not names:
        raise SequenceFormatError(f"{uri}: no numeric feature columns besides {sorted(reserved)}")
    return names


def _reserved(uri: str, frame: pd.DataFrame, columns: TableColumns) -> tuple[set[str], str | None]:
    """The non-feature columns present, and the step column to order by (None: file order)."""
    for name, what in ((ID_COLUMN, "sequence id"), (columns.label, "label")):
        if name not in frame.columns:
            raise SequenceFormatError(f"{uri}: {what} column {name!r} missing; columns: {list(frame.columns)}")
    step = columns.step or DEFAULT_STEP_COLUMN
    if step not in frame.columns:
        if columns.step is not None:
            raise SequenceFormatError(f"{uri}: step column {step!r} missing; columns: {list(frame.columns)}")
        step = ""
    reserved = {ID_COLUMN, columns.label, SPLIT_COLUMN, step} & set(frame.columns)
    return reserved, step or None


@dataclass
class _Table:
    """One long-form file, parsed column by column; one sequence at a time is cut from it."""

    uri: str
    frame: pd.DataFrame
    features: list[str]
    values: np.ndarray  # float64 (R, F)
    non_numeric: np.ndarray  # bool (R, F)
    steps: np.ndarray | None  # float64 (R,), NaN where missing or non-numeric

    def agreed(self, column: str, cells: list[str], rows: list[int], sid: str) -> str | QuarantinedItem:
        """The one value the sequence's rows give `column`, or why there is none."""
        first = rows[0]
        for row in rows:
            if not cells[row]:
                return QuarantinedItem(self.uri, f"missing {column}", sid, row, column)
            if cells[row] != cells[first]:
                reason = f"rows disagree on {column}: {cells[first]!r} (row {first}) vs {cells[row]!r}"
                return QuarantinedItem(self.uri, reason, sid, row, column)
        return cells[first]

    def ordered(self, rows: np.ndarray, sid: str, step: str) -> np.ndarray | QuarantinedItem:
        assert self.steps is not None
        steps = self.steps[rows]
        if np.isnan(steps).any():
            row = int(rows[np.isnan(steps).argmax()])
            cell = self.frame[step].iloc[row]
            return QuarantinedItem(self.uri, f"missing or non-numeric step {cell!r}", sid, row, step)
        order: np.ndarray = rows[np.argsort(steps, kind="stable")]
        repeated = np.flatnonzero(np.diff(self.steps[order]) == 0)
        if len(repeated):
            first, second = int(order[repeated[0]]), int(order[repeated[0] + 1])
            reason = f"duplicate step {self.steps[first]:g} (rows {first} and {second})"
            return QuarantinedItem(self.uri, reason, sid, second, step)
        return order

    def frames(self, rows: np.ndarray, sid: str) -> np.ndarray | QuarantinedItem:
        """float32 (T, F) of these rows, or the first bad cell (non-numeric, then NaN, then inf)."""
        block: np.ndarray = self.values[rows]  # float64 (T, F)
        bad_cells = self.non_numeric[rows] | ~np.isfinite(block)
        if not bad_cells.any():
            return block.astype(np.float32)
        t, f = divmod(int(bad_cells.argmax()), block.shape[1])
        column, row = self.features[f], int(rows[t])
        if self.non_numeric[row, f]:
            reason = f"non-numeric value {self.frame[column].iloc[row]!r} in numeric column {column!r}"
        else:
            reason = f"{'missing or NaN' if np.isnan(block[t, f]) else 'infinite'} value in column {column!r}"
        more = int(bad_cells.sum()) - 1
        return QuarantinedItem(self.uri, reason + (f" ({more} more bad cells)" if more else ""), sid, row, column)


def read_table(uri: str, data: bytes, columns: TableColumns) -> FileSequences:
    """The valid sequences of one CSV or Parquet file; bad rows and sequences quarantined."""
    frame = load_frame(uri, data, SequenceFormatError)
    reserved, step = _reserved(uri, frame, columns)
    features = _feature_names(uri, frame, reserved, columns.features)
    parsed = [parse_numeric(frame[name]) for name in features]
    table = _Table(
        uri,
        frame,
        features,
        values=np.stack([values for values, _ in parsed], axis=1).reshape(len(frame), len(features)),
        non_numeric=np.stack([bad for _, bad in parsed], axis=1).reshape(len(frame), len(features)),
        steps=parse_numeric(frame[step])[0] if step else None,
    )
    ids, labels = text_cells(frame[ID_COLUMN]), text_cells(frame[columns.label])
    splits = text_cells(frame[SPLIT_COLUMN]) if SPLIT_COLUMN in frame.columns else None
    if splits is not None:
        check_split_cells(uri, splits, SequenceFormatError)
    out = FileSequences(uri, features, has_splits=splits is not None)
    groups: dict[str, list[int]] = {}
    for row, sid in enumerate(ids):
        if sid:
            groups.setdefault(sid, []).append(row)
        else:
            out.quarantined.append(QuarantinedItem(uri, f"missing {ID_COLUMN}", None, row, ID_COLUMN))
    for sid, row_list in groups.items():
        rows = np.asarray(row_list, dtype=np.int64)
        label = table.agreed(columns.label, labels, row_list, sid)
        split = table.agreed(SPLIT_COLUMN, splits, row_list, sid) if splits is not None else ""
        order = table.ordered(rows, sid, step) if step else rows
        frames = order if isinstance(order, QuarantinedItem) else table.frames(order, sid)
        problem = next((v for v in (label, split, frames) if isinstance(v, QuarantinedItem)), None)
        if problem is not None:
            out.quarantined.append(problem)
            continue
        assert isinstance(frames, np.ndarray)
        assert isinstance(label, str)
        assert isinstance(split, str)
        out.add(frames, label, sid, split)
    return out
