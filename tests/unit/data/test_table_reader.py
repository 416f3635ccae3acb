"""The `table` reader: CSV/Parquet, column kinds, folders, quarantine and one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rooivalk.data.table_reader import MISSING_CATEGORY, TableFormatError, read_table_rows


def table(count: int = 8, seed: int = 0) -> pd.DataFrame:
    """`count` rows: two numeric features, a text and a bool feature, an id and a label."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": [f"r{i:02d}" for i in range(count)],
            "speed": rng.normal(size=count).round(4),
            "band": ["wifi", "lora", "wifi", "dji"] * (count // 4),
            "altitude": rng.uniform(0, 100, size=count).round(2),
            "night": [True, False] * (count // 2),
            "label": ["hobby", "threat"] * (count // 2),
        }
    )


def write_csv(frame: pd.DataFrame, path: Path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def test_csv_round_trip_detects_categorical_columns(tmp_path: Path) -> None:
    frame = table()
    uri = write_csv(frame, tmp_path / "rows.csv")
    read = read_table_rows(uri)
    assert read.numeric_names == ["speed", "altitude"]
    assert read.categorical_names == ["band", "night"]  # text and bool columns are categories
    np.testing.assert_array_equal(read.features, frame[["speed", "altitude"]].to_numpy(np.float32))
    assert read.features.dtype == np.float32
    assert read.categories.tolist() == [
        [band, str(night)] for band, night in zip(frame["band"], frame["night"], strict=True)
    ]
    assert read.labels == frame["label"].tolist()
    assert read.ids == frame["id"].tolist()
    assert read.origins == [uri] * 8
    assert read.splits is None
    assert read.quarantined == []
    assert read.classes == ["hobby", "threat"]


def test_parquet_reads_like_csv(tmp_path: Path) -> None:
    frame = table().assign(label=[3, 10] * 4)
    from_csv = read_table_rows(write_csv(frame, tmp_path / "a.csv"))
    frame.to_parquet(tmp_path / "a.parquet", index=False)
    from_parquet = read_table_rows(str(tmp_path / "a.parquet"))
    assert from_parquet.labels == from_csv.labels == ["3", "10"] * 4
    assert from_parquet.classes == ["3", "10"]  # integer labels in numeric order
    assert (from_parquet.numeric_names, from_parquet.categorical_names) == (["speed", "altitude"], ["band", "night"])
    np.testing.assert_array_equal(from_parquet.features, from_csv.features)
    assert from_parquet.categories.tolist() == from_csv.categories.tolist()


def test_listed_columns_and_a_numeric_looking_category(tmp_path: Path) -> None:
    frame = table().assign(channel=[1, 6, 11, 6] * 2).rename(columns={"label": "kind"})
    frame.to_parquet(tmp_path / "a.parquet", index=False)
    read = read_table_rows(
        str(tmp_path / "a.parquet"), label_column="kind", feature_columns=["channel", "speed"],
        categorical_columns=["channel"],
    )  # fmt: skip
    assert (read.numeric_names, read.categorical_names) == (["speed"], ["channel"])
    assert read.categories[:, 0].tolist() == ["1", "6", "11", "6"] * 2  # integers, never "6.0"


def test_a_missing_category_is_a_category_of_its_own(tmp_path: Path) -> None:
    frame = table()
    frame.loc[2, "band"] = None
    read = read_table_rows(write_csv(frame, tmp_path / "a.csv"))
    assert read.quarantined == []
    assert read.categories[2, 0] == MISSING_CATEGORY


def test_column_kind_follows_the_majority_of_cells(tmp_path: Path) -> None:
    frame = table().astype({"speed": object, "band": object})
    frame.loc[5, "speed"] = "fast"  # one stray word: still numeric, row 5 quarantined
    frame.loc[[0, 1], "band"] = ["2", "3"]  # two numbers among words: still categorical
    read = read_table_rows(write_csv(frame, tmp_path / "a.csv"))
    assert (read.numeric_names, read.categorical_names) == (["speed", "altitude"], ["band", "night"])
    [entry] = read.quarantined
    assert (entry.row, entry.column, entry.item_id) == (5, "speed", "r05")
    assert read.categories[:2, 0].tolist() == ["2", "3"]


def test_folder_files_merge_in_sorted_order_and_others_are_reported(tmp_path: Path) -> None:
    frame = table(count=12)
    (tmp_path / "src").mkdir()
    write_csv(frame.iloc[:4], tmp_path / "src" / "a.csv")
    frame.iloc[4:8][["label", "night", "speed", "altitude", "band", "id"]].to_parquet(tmp_path / "src" / "b.parquet")
    write_csv(frame.iloc[8:], tmp_path / "src" / "c.csv")
    (tmp_path / "src" / "README.md").write_text("notes")
    (tmp_path / "src" / ".hidden.csv").write_text("junk")
    read = read_table_rows(str(tmp_path / "src"))
    assert read.ids == frame["id"].tolist()
    np.testing.assert_array_equal(read.features, frame[["speed", "altitude"]].to_numpy(np.float32))
    assert read.categories[:, 0].tolist() == frame["band"].tolist()
    assert read.origins[4] == str(tmp_path / "src" / "b.parquet")
    [entry] = read.quarantined
    assert entry.origin.endswith("README.md")
    assert "not a table file" in entry.reason


def test_rows_without_an_id_column_are_named_by_file_and_row(tmp_path: Path) -> None:
    read = read_table_rows(write_csv(table(count=4).drop(columns="id"), tmp_path / "a.csv"))
    assert read.ids == ["a.csv#0", "a.csv#1", "a.csv#2", "a.csv#3"]


def _set(row: int, column: str, value: object) -> Callable[[pd.DataFrame], None]:
    def edit(frame: pd.DataFrame) -> None:
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value

    return edit


BAD_CELLS = [
    (_set(3, "speed", "nan"), "missing or NaN value in column 'speed'", "speed"),
    (_set(3, "altitude", ""), "missing or NaN value in column 'altitude'", "altitude"),
    (_set(3, "altitude", "-inf"), "infinite value in column 'altitude'", "altitude"),
    (_set(3, "speed", "1e39"), "value 1e+39 beyond float32 in column 'speed'", "speed"),
    (_set(3, "speed", "abc"), "non-numeric value 'abc' in numeric column 'speed'", "speed"),
    (_set(3, "label", ""), "missing label", "label"),
    (_set(3, "split", ""), "missing split", "split"),
]


@pytest.mark.parametrize(("edit", "reason", "column"), BAD_CELLS)
def test_bad_cells_quarantine_their_row_naming_file_row_and_column(
    tmp_path: Path, edit: Callable[[pd.DataFrame], None], reason: str, column: str
) -> None:
    frame = table().assign(split=["train", "val"] * 4)
    edit(frame)
    uri = write_csv(frame, tmp_path / "a.csv")
    read = read_table_rows(uri)
    [entry] = read.quarantined
    assert entry.as_dict() == {"origin": uri, "reason": reason, "sequence_id": "r03", "row": 3, "column": column}
    assert read.ids == [f"r{i:02d}" for i in range(8) if i != 3]  # nothing else lost
    assert read.splits == [split for i, split in enumerate(frame["split"]) if i != 3]


def test_several_bad_cells_are_counted_in_the_reason(tmp_path: Path) -> None:
    frame = table()
    frame.loc[1, ["speed", "altitude"]] = np.nan
    [entry] = read_table_rows(write_csv(frame, tmp_path / "a.csv")).quarantined
    assert entry.reason == "missing or NaN value in column 'speed' (1 more bad cells)"


def _one_line(error: pytest.ExceptionInfo[TableFormatError], *names: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for name in names:
        assert name in message


WHOLE_SOURCE = [
    (lambda f: f.drop(columns="label"), {}, "label column 'label' missing", ["'label'"]),
    (lambda f: f[["id", "label"]], {}, "no feature columns", []),
    (lambda f: f.assign(split="holdout"), {}, "split 'holdout' is not one of", ["'split'", "row 0"]),
    (lambda f: f, {"feature_columns": ["speed", "wind"]}, r"feature column\(s\) \['wind'\] not found", []),
    (lambda f: f, {"feature_columns": ["speed", "label"]}, r"\['label'\] cannot be features", []),
    (lambda f: f, {"feature_columns": ["speed"], "categorical_columns": ["band"]}, "not among the features", []),
]


@pytest.mark.parametrize(("edit", "options", "match", "names"), WHOLE_SOURCE)
def test_whole_source_problems_are_one_line_errors_naming_file_and_column(
    tmp_path: Path,
    edit: Callable[[pd.DataFrame], pd.DataFrame],
    options: dict[str, list[str]],
    match: str,
    names: list[str],
) -> None:
    uri = write_csv(edit(table()), tmp_path / "a.csv")
    with pytest.raises(TableFormatError, match=match) as error:
        read_table_rows(uri, **options)  # type: ignore[arg-type]
    _one_line(error, uri, *names)


def test_column_sets_that_differ_between_files_are_an_error(tmp_path: Path) -> None:
    frame = table()
    write_csv(frame, tmp_path / "a.csv")
    write_csv(frame.drop(columns="altitude").assign(wind=1.0), tmp_path / "b.csv")
    with pytest.raises(TableFormatError, match=r"missing \['altitude'\], extra \['wind'\]") as error:
        read_table_rows(str(tmp_path))
    _one_line(error, str(tmp_path / "b.csv"), str(tmp_path / "a.csv"))


def test_unreadable_and_absent_sources_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "a.parquet").write_bytes(b"not parquet")
    with pytest.raises(TableFormatError, match="not a readable table") as error:
        read_table_rows(str(tmp_path / "a.parquet"))
    _one_line(error, "a.parquet")
    with pytest.raises(TableFormatError, match="data source not found"):
        read_table_rows(str(tmp_path / "none.csv"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("x")
    with pytest.raises(TableFormatError, match="no CSV or Parquet file"):
        read_table_rows(str(tmp_path / "docs"))


def test_no_rows_left_is_an_error_that_keeps_the_quarantine(tmp_path: Path) -> None:
    uri = write_csv(table(count=4).assign(label=""), tmp_path / "a.csv")
    with pytest.raises(TableFormatError, match="no rows left") as error:
        read_table_rows(uri)
    _one_line(error, uri)
    assert [entry.row for entry in error.value.quarantined] == [0, 1, 2, 3]
