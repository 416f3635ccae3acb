"""The versioned table dataset: layout, train-only categories and standardization, unseen categories,
content versioning, splits, and the encoding of new rows for a model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rooivalk import storage
from rooivalk.data.dataset import SPLIT_CODES, load_quarantine
from rooivalk.data.ingest import IngestError
from rooivalk.data.table_dataset import (
    UNSEEN,
    encode_rows,
    ingest_table,
    is_table_dataset,
    load_table_dataset,
    model_input_names,
    model_inputs,
    one_hot,
)
from rooivalk.plan import SplitSpec

SPLIT = SplitSpec(train=0.5, val=0.25, test=0.25, seed=3)


def table(count: int = 24, seed: int = 0) -> pd.DataFrame:
    """`count` rows over two classes (threat rows are faster); `band` cycles wifi/lora/dji."""
    rng = np.random.default_rng(seed)
    label = np.array(["hobby", "threat"] * (count // 2))
    return pd.DataFrame(
        {
            "id": [f"r{i:02d}" for i in range(count)],
            "speed": (rng.normal(size=count) + np.where(label == "threat", 4.0, 0.0)).round(4),
            "altitude": rng.uniform(0, 100, size=count).round(2),
            "band": ["wifi", "lora", "dji"] * (count // 3),
            "label": label,
        }
    )


def write(frame: pd.DataFrame, path: Path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def with_splits(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows 0-11 train, 12-17 val, 18-23 test; `band` "sat" only in val and test (twice each)."""
    frame = frame.assign(split=["train"] * 12 + ["val"] * 6 + ["test"] * 6)
    frame.loc[[12, 13, 18, 19], "band"] = "sat"
    return frame


def test_ingest_writes_the_layout_and_loads_back(tmp_path: Path) -> None:
    frame = table().astype({"speed": object})
    frame.loc[4, "speed"] = "fast"  # quarantined; everything else is kept
    source = write(frame, tmp_path / "rows.csv")
    result = ingest_table(source, str(tmp_path / "ds"), split=SPLIT)
    dataset = load_table_dataset(str(tmp_path / "ds"))
    info = dataset.info
    assert is_table_dataset(str(tmp_path / "ds"))
    assert (info.format, info.num_rows, info.classes) == ("table", 23, ["hobby", "threat"])
    assert info.version_id.startswith("ds-")
    assert (info.numeric_features, [f.name for f in info.categorical_features]) == (["speed", "altitude"], ["band"])
    assert dataset.features.shape == (23, 2)
    assert dataset.features.dtype == np.float32
    assert dataset.categories.shape == (23, 1)
    assert dataset.categories.dtype == np.int64
    assert info.split_sizes == {name: int(dataset.split_mask(name).sum()) for name in SPLIT_CODES}
    assert sum(info.split_sizes.values()) == 23
    assert result.quarantined == load_quarantine(str(tmp_path / "ds"))
    assert result.quarantined == [
        {"origin": source, "reason": "non-numeric value 'fast' in numeric column 'speed'",
         "sequence_id": "r04", "row": 4, "column": "speed"},
    ]  # fmt: skip
    assert (info.quarantined, result.metrics["num_quarantined"], result.metrics["num_rows"]) == (1, 1.0, 23.0)
    rows = pd.read_csv(tmp_path / "ds" / "rows.csv", dtype=str)
    assert list(rows.columns) == ["index", "id", "label", "split", "origin"]
    assert set(rows["origin"]) == {source}
    original = frame.drop(index=4).set_index("id")
    [band] = info.categorical_features
    for row in rows.itertuples():
        index = int(row.index)
        expected = original.loc[row.id, ["speed", "altitude"]].to_numpy(np.float32)
        np.testing.assert_array_equal(dataset.features[index], expected)
        assert band.categories[dataset.categories[index, 0]] == original.loc[row.id, "band"]
        assert info.classes[dataset.labels[index]] == row.label == original.loc[row.id, "label"]
        assert dataset.splits[index] == SPLIT_CODES[row.split]


def test_categories_come_from_train_only_and_unseen_values_are_counted(tmp_path: Path) -> None:
    frame = with_splits(table())
    result = ingest_table(write(frame, tmp_path / "a.csv"), str(tmp_path / "ds"), split=SPLIT)
    info = result.info
    assert info.split_from_source
    [band] = info.categorical_features
    assert band.categories == ["dji", "lora", "wifi", UNSEEN]  # sorted train values, then the unseen slot
    assert info.unseen == {"band": {"val": 2, "test": 2}}
    assert (result.metrics["unseen_band"], result.metrics["num_unseen"]) == (4.0, 4.0)
    dataset = load_table_dataset(str(tmp_path / "ds"))
    rows = pd.read_csv(tmp_path / "ds" / "rows.csv", dtype=str)
    sat = rows["id"].isin(["r12", "r13", "r18", "r19"]).to_numpy()
    assert (dataset.categories[sat, 0] == band.unseen_code).all()
    assert (dataset.categories[~sat, 0] < band.unseen_code).all()


def test_encode_rows_applies_the_train_categories_to_new_rows(tmp_path: Path) -> None:
    frame = with_splits(table())
    frame.loc[0, "band"] = ""  # a missing value in train: the "<missing>" category
    info = ingest_table(write(frame, tmp_path / "a.csv"), str(tmp_path / "ds"), split=SPLIT).info
    new = pd.DataFrame({"band": ["lora", "sat", None, "sat"], "altitude": ["1.5", 2, 3, 4], "speed": [0.0, 1, 2, 3]})
    numeric, codes, unseen = encode_rows(info, new)
    [band] = info.categorical_features
    assert "<missing>" in band.categories
    np.testing.assert_array_equal(numeric, [[0.0, 1.5], [1, 2], [2, 3], [3, 4]])  # raw, in the dataset's order
    assert numeric.dtype == np.float32
    assert codes[:, 0].tolist() == [band.categories.index("lora"), band.unseen_code,
                                    band.categories.index("<missing>"), band.unseen_code]  # fmt: skip
    assert unseen == {"band": 2}
    with pytest.raises(ValueError, match=r"row 1, column 'speed': non-numeric value 'x'"):
        encode_rows(info, new.assign(speed=["1", "x", "2", "3"]))
    with pytest.raises(ValueError, match=r"feature column\(s\) \['band'\] missing"):
        encode_rows(info, new.drop(columns="band"))


def test_model_inputs_standardize_numeric_and_one_hot_categories(tmp_path: Path) -> None:
    info = ingest_table(write(table(), tmp_path / "a.csv"), str(tmp_path / "ds"), split=SPLIT).info
    dataset = load_table_dataset(str(tmp_path / "ds"))
    x = model_inputs(info, dataset.features, dataset.categories)
    names = model_input_names(info)
    assert names == ["speed", "altitude", "band=dji", "band=lora", "band=wifi", f"band={UNSEEN}"]
    assert x.shape == (24, len(names))
    assert x.dtype == np.float32
    train = dataset.split_mask("train")
    np.testing.assert_allclose(x[train, :2].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x[train, :2].std(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(x[:, 2:].sum(axis=1), 1.0)  # one slot per row
    np.testing.assert_array_equal(x[:, 2:].argmax(axis=1), dataset.categories[:, 0])
    with pytest.raises(ValueError, match="codes outside 0..3"):
        one_hot(info, np.array([[4]]))


def test_standardization_comes_from_the_train_split_only(tmp_path: Path) -> None:
    info = ingest_table(write(table(), tmp_path / "a.csv"), str(tmp_path / "ds"), split=SPLIT).info
    dataset = load_table_dataset(str(tmp_path / "ds"))
    train, _, _ = dataset.subset("train")
    np.testing.assert_allclose(info.standardization.mean, train.astype(np.float64).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(info.standardization.std, train.astype(np.float64).std(axis=0), rtol=1e-6)
    assert not np.allclose(info.standardization.mean, dataset.features.astype(np.float64).mean(axis=0))


def test_version_is_stable_under_row_order_files_and_format_and_changes_with_a_value(tmp_path: Path) -> None:
    frame = table()
    first = ingest_table(write(frame, tmp_path / "a.csv"), str(tmp_path / "a"), split=SPLIT)
    shuffled = frame.sample(frac=1.0, random_state=7)
    again = ingest_table(write(shuffled, tmp_path / "b.csv"), str(tmp_path / "b"), split=SPLIT)
    (tmp_path / "parts").mkdir()
    shuffled.iloc[:10].to_parquet(tmp_path / "parts" / "x.parquet", index=False)
    write(shuffled.iloc[10:], tmp_path / "parts" / "y.csv")
    parts = ingest_table(str(tmp_path / "parts"), str(tmp_path / "p"), split=SPLIT)
    assert again.info.version_id == parts.info.version_id == first.info.version_id
    stored = [load_table_dataset(str(tmp_path / name)) for name in "abp"]
    for other in stored[1:]:
        np.testing.assert_array_equal(other.features, stored[0].features)
        np.testing.assert_array_equal(other.categories, stored[0].categories)
        np.testing.assert_array_equal(other.splits, stored[0].splits)

    changed = frame.copy()
    changed.loc[5, "band"] = "lora" if changed.loc[5, "band"] != "lora" else "wifi"
    other = ingest_table(write(changed, tmp_path / "c.csv"), str(tmp_path / "c"), split=SPLIT)
    assert other.info.version_id != first.info.version_id
    reseeded = ingest_table(str(tmp_path / "a.csv"), str(tmp_path / "d"), split=SPLIT.model_copy(update={"seed": 4}))
    assert reseeded.info.version_id != first.info.version_id


def test_the_source_split_column_is_honoured_unless_use_source_test_is_false(tmp_path: Path) -> None:
    frame = with_splits(table())
    source = write(frame, tmp_path / "a.csv")
    result = ingest_table(source, str(tmp_path / "ds"), split=SPLIT)
    rows = pd.read_csv(tmp_path / "ds" / "rows.csv")
    assert dict(zip(rows["id"], rows["split"], strict=True)) == dict(zip(frame["id"], frame["split"], strict=True))
    assert result.info.split_sizes == {"train": 12, "val": 6, "test": 6}
    drawn = ingest_table(source, str(tmp_path / "drawn"), split=SPLIT.model_copy(update={"use_source_test": False}))
    assert not drawn.info.split_from_source
    assert drawn.info.version_id != result.info.version_id
    assert drawn.info.split_sizes == {"train": 12, "val": 6, "test": 6}  # the fractions, drawn by the seed
    drawn_rows = pd.read_csv(tmp_path / "drawn" / "rows.csv")
    assert dict(zip(drawn_rows["id"], drawn_rows["split"], strict=True)) != dict(
        zip(frame["id"], frame["split"], strict=True)
    )


def test_a_source_split_of_train_only_is_divided_by_the_fractions(tmp_path: Path) -> None:
    source = write(table().assign(split="train"), tmp_path / "a.csv")
    result = ingest_table(source, str(tmp_path / "ds"), split=SPLIT)
    assert result.info.split_sizes == {"train": 12, "val": 6, "test": 6}


def test_a_source_split_without_train_is_refused(tmp_path: Path) -> None:
    source = write(table().assign(split="test"), tmp_path / "a.csv")
    with pytest.raises(IngestError, match="column 'split' gives no 'train' rows"):
        ingest_table(source, str(tmp_path / "ds"), split=SPLIT)


def test_a_class_with_too_few_rows_is_named(tmp_path: Path) -> None:
    frame = table()
    frame.loc[1, "label"] = "rare"
    with pytest.raises(IngestError, match="class 'rare' has 1 sample") as error:
        ingest_table(write(frame, tmp_path / "a.csv"), str(tmp_path / "ds"), split=SPLIT)
    assert "\n" not in str(error.value)


def test_a_whole_source_problem_is_a_one_line_ingest_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="label column 'kind' missing") as error:
        ingest_table(write(table(), tmp_path / "a.csv"), str(tmp_path / "ds"), label_column="kind")
    assert "\n" not in str(error.value)


def test_no_rows_left_still_writes_the_quarantine(tmp_path: Path) -> None:
    source = write(table(count=6).assign(label=""), tmp_path / "a.csv")
    report = tmp_path / "report" / "quarantine.json"
    with pytest.raises(IngestError, match="no rows left"):
        ingest_table(source, str(tmp_path / "ds"), quarantine_uri=str(report))
    entries = json.loads(report.read_text())
    assert [(entry["row"], entry["column"]) for entry in entries] == [(row, "label") for row in range(6)]
    assert load_quarantine(str(tmp_path / "ds")) == entries
    assert not is_table_dataset(str(tmp_path / "ds"))


def test_a_tampered_array_is_refused(tmp_path: Path) -> None:
    ingest_table(write(table(), tmp_path / "a.csv"), str(tmp_path / "ds"), split=SPLIT)
    storage.write_bytes(str(tmp_path / "ds" / "categories.npy"), b"not the array")
    with pytest.raises(storage.IntegrityError, match=r"categories\.npy"):
        load_table_dataset(str(tmp_path / "ds"))


def test_a_table_with_only_one_kind_of_feature(tmp_path: Path) -> None:
    frame = table()
    for name, columns in (("categorical", ["band"]), ("numeric", ["speed", "altitude"])):
        info = ingest_table(write(frame[[*columns, "label"]], tmp_path / f"{name}.csv"), str(tmp_path / name)).info
        dataset = load_table_dataset(str(tmp_path / name))
        x = model_inputs(info, dataset.features, dataset.categories)
        assert x.shape == (24, len(model_input_names(info)))
        numeric, codes, _ = encode_rows(info, frame.iloc[:2])
        assert (numeric.shape, codes.shape) == ((2, len(info.numeric_features)), (2, len(info.categorical_features)))
