"""The versioned sequence dataset: layout, content versioning, train-only standardization, splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rooivalk import storage
from rooivalk.data.dataset import SPLIT_CODES, load_quarantine
from rooivalk.data.ingest import IngestError
from rooivalk.data.sequence_dataset import (
    ingest_sequences,
    is_sequence_dataset,
    load_sequence_dataset,
    standardization_stats,
)
from rooivalk.plan import SplitSpec

FEATURES = ["x", "y"]
SPLIT = SplitSpec(train=0.5, val=0.25, test=0.25, seed=3)


def long_frame(count: int = 16, seed: int = 0) -> pd.DataFrame:
    """`count` sequences of 2..6 steps over two classes; class b is offset so classes differ."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        label = "ab"[index % 2]
        for step in range(2 + index % 5):
            x, y = rng.normal(size=2).round(4) + (5.0 if label == "b" else 0.0)
            rows.append({"sequence_id": f"q{index:02d}", "step": step, "label": label, "x": x, "y": y})
    return pd.DataFrame(rows)


def write(frame: pd.DataFrame, path: Path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def test_ingest_writes_the_layout_and_loads_back(tmp_path: Path) -> None:
    frame = long_frame().astype({"x": object})
    frame.loc[0, "x"] = "oops"  # q00 is quarantined; everything else is kept
    source = write(frame, tmp_path / "signs.csv")
    result = ingest_sequences(source, str(tmp_path / "ds"), length=4, split=SPLIT)
    dataset = load_sequence_dataset(str(tmp_path / "ds"))
    info = dataset.info
    assert is_sequence_dataset(str(tmp_path / "ds"))
    assert info.format == "sequences"
    assert info.version_id.startswith("ds-")
    assert (info.classes, info.feature_names, info.length, info.num_sequences) == (["a", "b"], FEATURES, 4, 15)
    assert dataset.sequences.shape == (15, 4, 2)
    assert dataset.sequences.dtype == np.float32
    assert sum(info.split_sizes.values()) == 15
    assert info.split_sizes == {name: int(dataset.split_mask(name).sum()) for name in SPLIT_CODES}
    assert info.quarantined == 1
    assert result.quarantined == load_quarantine(str(tmp_path / "ds"))
    assert result.quarantined[0] | {"origin": ""} == {
        "origin": "", "reason": "non-numeric value 'oops' in numeric column 'x'",
        "sequence_id": "q00", "row": 0, "column": "x",
    }  # fmt: skip
    assert result.metrics["num_sequences"] == 15.0
    table = pd.read_csv(tmp_path / "ds" / "sequences.csv", dtype=str)
    assert list(table.columns) == ["index", "sequence_id", "label", "split", "origin"]
    assert set(table["origin"]) == {source}
    # Each stored row is its source sequence, edge-padded or truncated to 4 frames.
    for row in table.itertuples():
        index = int(row.index)
        raw = frame[frame["sequence_id"] == row.sequence_id][FEATURES].to_numpy(np.float32)
        kept = min(len(raw), 4)
        assert dataset.lengths[index] == kept
        np.testing.assert_array_equal(dataset.sequences[index, :kept], raw[:kept])
        np.testing.assert_array_equal(dataset.sequences[index, kept:], np.repeat(raw[kept - 1 : kept], 4 - kept, 0))
        assert info.classes[dataset.labels[index]] == row.label
        assert SPLIT_CODES[row.split] == dataset.splits[index]
    assert info.truncated == int((frame.groupby("sequence_id").size().drop("q00") > 4).sum())


def test_version_is_stable_under_row_and_file_order_and_changes_with_a_value(tmp_path: Path) -> None:
    frame = long_frame()
    first = ingest_sequences(write(frame, tmp_path / "a.csv"), str(tmp_path / "a"), length=4, split=SPLIT)
    shuffled = frame.sample(frac=1.0, random_state=7)
    again = ingest_sequences(write(shuffled, tmp_path / "b.csv"), str(tmp_path / "b"), length=4, split=SPLIT)
    assert again.info.version_id == first.info.version_id
    assert again.info.split_sizes == first.info.split_sizes
    stored_a, stored_b = load_sequence_dataset(str(tmp_path / "a")), load_sequence_dataset(str(tmp_path / "b"))
    np.testing.assert_array_equal(stored_a.sequences, stored_b.sequences)
    np.testing.assert_array_equal(stored_a.splits, stored_b.splits)

    changed = frame.copy()
    changed.loc[5, "y"] = changed.loc[5, "y"] + 0.5
    other = ingest_sequences(write(changed, tmp_path / "c.csv"), str(tmp_path / "c"), length=4, split=SPLIT)
    assert other.info.version_id != first.info.version_id
    longer = ingest_sequences(str(tmp_path / "a.csv"), str(tmp_path / "d"), length=5, split=SPLIT)
    assert longer.info.version_id != first.info.version_id


def test_standardization_comes_from_real_train_frames_only(tmp_path: Path) -> None:
    source = write(long_frame(), tmp_path / "a.csv")
    info = ingest_sequences(source, str(tmp_path / "ds"), length=3, split=SPLIT).info
    dataset = load_sequence_dataset(str(tmp_path / "ds"))
    x, lengths, _ = dataset.subset("train")
    real = np.concatenate([sequence[:length] for sequence, length in zip(x, lengths, strict=True)]).astype(np.float64)
    np.testing.assert_allclose(info.standardization.mean, real.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(info.standardization.std, real.std(axis=0), rtol=1e-6)
    everything = dataset.sequences.reshape(-1, 2).astype(np.float64)
    assert not np.allclose(info.standardization.mean, everything.mean(axis=0))
    standardized = info.standardization.apply(real)
    assert standardized.dtype == np.float32
    np.testing.assert_allclose(standardized.mean(axis=0), 0.0, atol=1e-5)


def test_a_constant_feature_is_centred_not_scaled() -> None:
    sequences = np.array([[[2.0, 0.0], [2.0, 4.0]], [[2.0, 9.0], [2.0, 9.0]]], dtype=np.float32)  # (2, 2, 2)
    scale = standardization_stats(sequences, np.array([2, 1]), np.array([True, True]))
    assert scale.mean == [2.0, pytest.approx(13 / 3)]  # the padded frame [2, 9] of sequence 1 is left out
    assert scale.std[0] == 1.0
    np.testing.assert_array_equal(scale.apply(np.array([[2.0, 13 / 3], [3.0, 13 / 3]]))[:, 0], [0.0, 1.0])


def test_the_source_split_column_is_honoured(tmp_path: Path) -> None:
    frame = long_frame(count=8)
    wanted = {f"q{i:02d}": ["train", "train", "val", "test"][i % 4] for i in range(8)}
    source = write(frame.assign(split=frame["sequence_id"].map(wanted)), tmp_path / "a.csv")
    result = ingest_sequences(source, str(tmp_path / "ds"), split=SPLIT)
    assert result.info.split_from_source
    assert result.info.length == 6  # no length given: the longest sequence
    table = pd.read_csv(tmp_path / "ds" / "sequences.csv")
    assert dict(zip(table["sequence_id"], table["split"], strict=True)) == wanted
    drawn = ingest_sequences(source, str(tmp_path / "drawn"), split=SPLIT.model_copy(update={"use_source_test": False}))
    assert not drawn.info.split_from_source
    assert drawn.info.version_id != result.info.version_id


def test_a_source_split_of_train_and_test_keeps_test_and_draws_val_from_train(tmp_path: Path) -> None:
    frame = long_frame(count=24)
    wanted = {f"q{i:02d}": "test" if i < 4 else "train" for i in range(24)}
    source = write(frame.assign(split=frame["sequence_id"].map(wanted)), tmp_path / "a.csv")
    result = ingest_sequences(source, str(tmp_path / "ds"), split=SPLIT)
    table = pd.read_csv(tmp_path / "ds" / "sequences.csv")
    splits = dict(zip(table["sequence_id"], table["split"], strict=True))
    assert {name for name, split in splits.items() if split == "test"} == {"q00", "q01", "q02", "q03"}
    assert result.info.split_sizes == {"train": 13, "val": 7, "test": 4}  # 20 train items in the ratio 0.5 : 0.25
    assert result.info.split_from_source


def test_a_source_split_without_train_is_refused(tmp_path: Path) -> None:
    frame = long_frame(count=8)
    source = write(frame.assign(split="val"), tmp_path / "a.csv")
    with pytest.raises(IngestError, match="column 'split' gives no 'train' sequences"):
        ingest_sequences(source, str(tmp_path / "ds"), split=SPLIT)


def test_a_class_with_too_few_sequences_is_named(tmp_path: Path) -> None:
    frame = long_frame()
    frame.loc[frame["sequence_id"] == "q01", "label"] = "rare"
    with pytest.raises(IngestError, match="class 'rare' has 1 sample") as error:
        ingest_sequences(write(frame, tmp_path / "a.csv"), str(tmp_path / "ds"), split=SPLIT)
    assert "\n" not in str(error.value)


def test_no_sequences_left_still_writes_the_quarantine(tmp_path: Path) -> None:
    source = write(long_frame(count=2).assign(x="bad"), tmp_path / "a.csv")
    report = tmp_path / "report" / "quarantine.json"
    with pytest.raises(IngestError, match="no sequences left"):
        ingest_sequences(source, str(tmp_path / "ds"), feature_columns=["x"], quarantine_uri=str(report))
    entries = json.loads(report.read_text())
    assert [entry["sequence_id"] for entry in entries] == ["q00", "q01"]
    assert load_quarantine(str(tmp_path / "ds")) == entries
    assert not is_sequence_dataset(str(tmp_path / "ds"))


def test_npz_ingest_and_a_tampered_array_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 5, 3)).astype(np.float32)
    np.savez(tmp_path / "a.npz", X=x, lengths=np.array([5, 2, 3, 4] * 3), y=np.array([0, 1, 2] * 4))
    info = ingest_sequences(str(tmp_path / "a.npz"), str(tmp_path / "ds"), length=5, split=SPLIT).info
    assert (info.classes, info.feature_names, info.num_sequences) == (["0", "1", "2"], ["f0", "f1", "f2"], 12)
    dataset = load_sequence_dataset(str(tmp_path / "ds"))
    assert sorted(dataset.lengths.tolist()) == sorted([5, 2, 3, 4] * 3)
    storage.write_bytes(str(tmp_path / "ds" / "lengths.npy"), b"not the array")
    with pytest.raises(storage.IntegrityError, match=r"lengths\.npy"):
        load_sequence_dataset(str(tmp_path / "ds"))
