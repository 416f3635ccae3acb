"""The `sequences` reader: long CSV/Parquet and NPZ, step order, padding, quarantine and one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rooivalk.data.sequence_reader import SequenceFormatError, pad_or_truncate, read_sequences

FEATURES = ["x", "y", "z"]


def long_frame(count: int = 6, seed: int = 0, classes: tuple[str, ...] = ("hello", "thanks")) -> pd.DataFrame:
    """`count` sequences of 3..5 steps, one row per step, plus a text column that is not a feature."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        for step in range(3 + index % 3):
            values = rng.normal(size=len(FEATURES)).round(4)
            rows.append(
                {"sequence_id": f"s{index:02d}", "step": step, "label": classes[index % len(classes)],
                 **dict(zip(FEATURES, values, strict=True)), "signer": "ann"}
            )  # fmt: skip
    return pd.DataFrame(rows)


def expected(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {
        sid: group.sort_values("step")[FEATURES].to_numpy(np.float32) for sid, group in frame.groupby("sequence_id")
    }


def write_csv(frame: pd.DataFrame, path: Path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def test_long_csv_round_trip(tmp_path: Path) -> None:
    frame = long_frame()
    read = read_sequences(write_csv(frame, tmp_path / "signs.csv"))
    assert read.feature_names == FEATURES  # `signer` is text and `step` orders rows: neither is a feature
    assert read.sequence_ids == [f"s{i:02d}" for i in range(6)]
    assert read.labels == ["hello", "thanks"] * 3
    assert read.splits is None
    assert read.quarantined == []
    assert read.origins == [str(tmp_path / "signs.csv")] * 6
    for sid, sequence in zip(read.sequence_ids, read.sequences, strict=True):
        assert sequence.dtype == np.float32
        np.testing.assert_array_equal(sequence, expected(frame)[sid])


def test_parquet_reads_like_csv_and_integer_labels_stay_integers(tmp_path: Path) -> None:
    frame = long_frame(classes=("3", "7"))
    from_csv = read_sequences(write_csv(frame, tmp_path / "a.csv"))
    frame.assign(label=frame["label"].astype(int)).to_parquet(tmp_path / "a.parquet", index=False)
    from_parquet = read_sequences(str(tmp_path / "a.parquet"))
    assert from_parquet.labels == from_csv.labels == ["3", "7"] * 3
    assert from_parquet.feature_names == from_csv.feature_names
    for left, right in zip(from_parquet.sequences, from_csv.sequences, strict=True):
        np.testing.assert_array_equal(left, right)


def test_npz_round_trip_reads_only_real_frames(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 5, 2)).astype(np.float32)
    x[1, 3:] = np.nan  # past sequence 1's length: padding, never checked
    lengths = np.array([5, 3, 1, 4])
    np.savez(tmp_path / "signs.npz", X=x, lengths=lengths, y=np.array([0, 1, 0, 1]),
             split=np.array(["train", "val", "test", "train"]))  # fmt: skip
    read = read_sequences(str(tmp_path / "signs.npz"))
    assert read.feature_names == ["f0", "f1"]
    assert read.labels == ["0", "1", "0", "1"]
    assert read.splits == ["train", "val", "test", "train"]
    assert read.sequence_ids == [f"signs.npz#{i}" for i in range(4)]
    assert read.quarantined == []
    for index, sequence in enumerate(read.sequences):
        np.testing.assert_array_equal(sequence, x[index, : lengths[index]])


def test_integer_classes_sort_numerically(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", X=np.zeros((3, 2, 1)), y=np.array([10, 2, 0]))
    assert read_sequences(str(tmp_path / "a.npz")).classes == ["0", "2", "10"]


def test_npz_ids_names_and_default_lengths(tmp_path: Path) -> None:
    x = np.arange(2 * 3 * 2, dtype=np.float64).reshape(2, 3, 2)
    np.savez(tmp_path / "a.npz", X=x, y=np.array(["a", "b"]), sequence_id=np.array(["p", "q"]),
             feature_names=np.array(["u", "v"]))  # fmt: skip
    read = read_sequences(str(tmp_path / "a.npz"))
    assert read.sequence_ids == ["p", "q"]
    assert read.feature_names == ["u", "v"]
    assert [len(s) for s in read.sequences] == [3, 3]


def test_step_column_orders_rows(tmp_path: Path) -> None:
    frame = long_frame()
    shuffled = frame.sample(frac=1.0, random_state=3).rename(columns={"step": "t"})
    read = read_sequences(write_csv(shuffled, tmp_path / "a.csv"), step_column="t")
    for sid, sequence in zip(read.sequence_ids, read.sequences, strict=True):
        np.testing.assert_array_equal(sequence, expected(frame)[sid])
    with pytest.raises(SequenceFormatError, match=r"a\.csv: step column 'frame' missing"):
        read_sequences(str(tmp_path / "a.csv"), step_column="frame")


def test_without_a_step_column_rows_keep_file_order(tmp_path: Path) -> None:
    frame = long_frame().drop(columns="step")
    read = read_sequences(write_csv(frame, tmp_path / "a.csv"))
    first = frame[frame["sequence_id"] == "s00"][FEATURES].to_numpy(np.float32)
    np.testing.assert_array_equal(read.sequences[0], first)


def test_listed_feature_columns_and_label_column(tmp_path: Path) -> None:
    frame = long_frame().rename(columns={"label": "word"})
    read = read_sequences(write_csv(frame, tmp_path / "a.csv"), label_column="word", feature_columns=["z", "x"])
    assert read.feature_names == ["z", "x"]
    assert read.sequences[0].shape[1] == 2


def test_folder_files_merge_in_the_first_files_feature_order(tmp_path: Path) -> None:
    frame = long_frame(count=8)
    (tmp_path / "src").mkdir()
    write_csv(frame[frame["sequence_id"] < "s04"], tmp_path / "src" / "a.csv")
    second = frame[frame["sequence_id"] >= "s04"]
    second[["label", "z", "step", "y", "sequence_id", "x"]].to_parquet(tmp_path / "src" / "b.parquet", index=False)
    (tmp_path / "src" / "README.md").write_text("notes")
    read = read_sequences(str(tmp_path / "src"))
    assert read.sequence_ids == [f"s{i:02d}" for i in range(8)]
    for sid, sequence in zip(read.sequence_ids, read.sequences, strict=True):
        np.testing.assert_array_equal(sequence, expected(frame)[sid])
    [entry] = read.quarantined  # the README: reported, not read
    assert entry.origin.endswith("README.md")
    assert "not a sequence file" in entry.reason


def _set(row: int, column: str, value: object) -> Callable[[pd.DataFrame], None]:
    def edit(frame: pd.DataFrame) -> None:
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value

    return edit


# Row 4 is step 1 of s01 (s00 has 3 rows); row 7 is s02's first row.
BAD_CELLS = [
    (_set(4, "y", "nan"), "missing or NaN value in column 'y'", "s01", 4, "y"),
    (_set(4, "y", ""), "missing or NaN value in column 'y'", "s01", 4, "y"),
    (_set(4, "x", "inf"), "infinite value in column 'x'", "s01", 4, "x"),
    (_set(4, "z", "abc"), "non-numeric value 'abc' in numeric column 'z'", "s01", 4, "z"),
    (_set(4, "label", ""), "missing label", "s01", 4, "label"),
    (_set(4, "label", "hello"), "rows disagree on label: 'thanks' (row 3) vs 'hello'", "s01", 4, "label"),
    (_set(4, "step", 0), "duplicate step 0 (rows 3 and 4)", "s01", 4, "step"),
    (_set(4, "step", "?"), "missing or non-numeric step '?'", "s01", 4, "step"),
    (_set(7, "sequence_id", ""), "missing sequence_id", None, 7, "sequence_id"),
]


@pytest.mark.parametrize(("edit", "reason", "sid", "row", "column"), BAD_CELLS)
def test_bad_cells_quarantine_their_sequence_naming_file_row_and_column(
    tmp_path: Path, edit: Callable[[pd.DataFrame], None], reason: str, sid: str | None, row: int, column: str
) -> None:
    frame = long_frame()
    edit(frame)
    uri = write_csv(frame, tmp_path / "a.csv")
    read = read_sequences(uri)
    [entry] = read.quarantined
    assert entry.as_dict() == {"origin": uri, "reason": reason, "row": row, "column": column} | (
        {"sequence_id": sid} if sid else {}
    )
    lost = {sid} if sid else set()
    assert set(read.sequence_ids) == {f"s{i:02d}" for i in range(6)} - lost  # nothing else lost


def test_split_column_is_read_and_rows_must_agree(tmp_path: Path) -> None:
    frame = long_frame()
    frame["split"] = frame["sequence_id"].map(lambda sid: ["train", "val", "test"][int(sid[1:]) % 3])
    frame.loc[4, "split"] = "test"
    uri = write_csv(frame, tmp_path / "a.csv")
    read = read_sequences(uri)
    assert read.splits == ["train", "test", "train", "val", "test"]
    [entry] = read.quarantined
    assert (entry.item_id, entry.row, entry.column) == ("s01", 4, "split")
    assert entry.reason.startswith("rows disagree on split")


NPZ_CASES = [
    ("lengths", 1, 0, "empty sequence (length 0)", "lengths"),
    ("lengths", 1, 9, "length 9 outside 1..4 (X has 4 steps)", "lengths"),
    ("X", 2, np.inf, "infinite value at step 1 in feature 'f1'", "f1"),
    ("X", 2, np.nan, "NaN value at step 1 in feature 'f1'", "f1"),
    ("y", 3, "", "missing label", "y"),
]


@pytest.mark.parametrize(("array", "index", "value", "reason", "column"), NPZ_CASES)
def test_bad_npz_sequences_are_quarantined_with_index_and_array(
    tmp_path: Path, array: str, index: int, value: object, reason: str, column: str
) -> None:
    arrays = {"X": np.zeros((4, 4, 2)), "lengths": np.full(4, 4), "y": np.array(["a", "b", "a", "b"])}
    if array == "X":
        arrays["X"][index, 1, 1] = value
    else:
        arrays[array][index] = value
    np.savez(tmp_path / "a.npz", **arrays)
    read = read_sequences(str(tmp_path / "a.npz"))
    [entry] = read.quarantined
    assert (entry.reason, entry.item_id, entry.row, entry.column) == (reason, f"a.npz#{index}", index, column)
    assert len(read.sequences) == 3


def test_a_sequence_id_repeated_in_a_later_file_is_quarantined(tmp_path: Path) -> None:
    frame = long_frame(count=2)
    write_csv(frame, tmp_path / "a.csv")
    write_csv(frame[frame["sequence_id"] == "s01"], tmp_path / "b.csv")
    read = read_sequences(str(tmp_path))
    assert read.sequence_ids == ["s00", "s01"]
    [entry] = read.quarantined
    assert (entry.origin, entry.item_id) == (str(tmp_path / "b.csv"), "s01")
    assert entry.reason == f"sequence id also in {tmp_path / 'a.csv'}"


def _one_line(error: pytest.ExceptionInfo[SequenceFormatError], *names: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for name in names:
        assert name in message


def test_whole_source_problems_are_one_line_errors_naming_file_and_column(tmp_path: Path) -> None:
    frame = long_frame()
    uri = write_csv(frame.drop(columns="label"), tmp_path / "nolabel.csv")
    with pytest.raises(SequenceFormatError, match="label column 'label' missing") as error:
        read_sequences(uri)
    _one_line(error, uri, "'label'")

    uri = write_csv(frame[["sequence_id", "label", "signer"]], tmp_path / "nofeatures.csv")
    with pytest.raises(SequenceFormatError, match="no numeric feature columns") as error:
        read_sequences(uri)
    _one_line(error, uri)

    uri = write_csv(frame.assign(split="holdout"), tmp_path / "split.csv")
    with pytest.raises(SequenceFormatError, match="split 'holdout' is not one of") as error:
        read_sequences(uri)
    _one_line(error, uri, "'split'", "row 0")

    np.savez(tmp_path / "noy.npz", X=np.zeros((2, 3, 1)))
    with pytest.raises(SequenceFormatError, match="label array 'y' missing") as error:
        read_sequences(str(tmp_path / "noy.npz"))
    _one_line(error, "noy.npz")

    with pytest.raises(SequenceFormatError, match=r"feature column\(s\) \['w'\] not found") as error:
        read_sequences(write_csv(frame, tmp_path / "a.csv"), feature_columns=["x", "w"])
    _one_line(error, "a.csv")


def test_a_feature_count_that_differs_between_files_is_an_error(tmp_path: Path) -> None:
    frame = long_frame()
    write_csv(frame, tmp_path / "a.csv")
    write_csv(frame.drop(columns="z"), tmp_path / "b.csv")
    with pytest.raises(SequenceFormatError, match="2 feature columns") as error:
        read_sequences(str(tmp_path))
    _one_line(error, str(tmp_path / "b.csv"), str(tmp_path / "a.csv"), "'x', 'y'")


def test_no_sequences_left_is_an_error_that_keeps_the_quarantine(tmp_path: Path) -> None:
    uri = write_csv(long_frame(count=2).assign(x="bad"), tmp_path / "a.csv")
    with pytest.raises(SequenceFormatError, match="no sequences left") as error:
        read_sequences(uri, feature_columns=["x"])
    _one_line(error, uri)
    assert [entry.item_id for entry in error.value.quarantined] == ["s00", "s01"]


def test_pad_or_truncate_repeats_the_last_frame_and_keeps_the_first(tmp_path: Path) -> None:
    short = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)  # (2, F=2)
    long = np.arange(10, dtype=np.float32).reshape(5, 2)  # (5, 2)
    x, lengths = pad_or_truncate([short, long], 3)
    assert x.shape == (2, 3, 2)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x[0], [[1, 2], [3, 4], [3, 4]])
    np.testing.assert_array_equal(x[1], long[:3])
    np.testing.assert_array_equal(lengths, [2, 3])
    with pytest.raises(ValueError, match="at least 1"):
        pad_or_truncate([short], 0)
    with pytest.raises(ValueError, match=r"sequence 1: shape \(0, 2\)"):
        pad_or_truncate([short, np.zeros((0, 2), dtype=np.float32)], 3)
