"""The attribution simulator: deterministic by seed, extends by count, one row per event, ingests cleanly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rooivalk.data.simulators.attribution import (
    BANDS,
    CATEGORICAL_FEATURES,
    CLASSES,
    FEATURES,
    GENERATOR_VERSION,
    NO_LINK_POWER_DBM,
    NUMERIC_FEATURES,
    PROTOCOLS,
    simulate_attribution,
)
from rooivalk.data.table_dataset import ingest_table


def test_writes_a_parquet_table_and_its_settings(tmp_path):
    seen: list[tuple[int, int]] = []
    result = simulate_attribution(
        str(tmp_path / "attr"), 202, seed=1, progress=lambda done, total: seen.append((done, total))
    )
    assert result.table_uri == str(tmp_path / "attr" / "attribution.parquet")
    assert result.meta_uri == str(tmp_path / "attr" / "simulation.json")
    assert seen[-1] == (202, 202)
    assert len(seen) == 202
    table = pd.read_parquet(result.table_uri)
    assert list(table.columns) == ["id", "label", *CATEGORICAL_FEATURES, *NUMERIC_FEATURES]
    assert len(table) == result.rows == result.count == 202
    assert table["id"].tolist()[:2] == ["attr0001-000000", "attr0001-000001"]
    assert table["id"].is_unique
    assert table["label"].tolist()[:5] == [*CLASSES, CLASSES[0]]
    assert result.class_counts == {"hobbyist": 51, "commercial": 51, "surveillance": 50, "hostile": 50}
    assert table["label"].value_counts().to_dict() == result.class_counts
    numeric = table[NUMERIC_FEATURES].to_numpy(dtype=np.float64)
    assert np.isfinite(numeric).all()
    assert set(table["rf_protocol"]) <= set(PROTOCOLS)
    assert set(table["rf_band"]) <= set(BANDS)
    assert set(table["is_weekend"]) == {0, 1}
    assert table["time_of_day_h"].between(0.0, 24.0, inclusive="left").all()
    assert table["loiter_fraction"].between(0.0, 1.0).all()
    assert (table[["speed_mps", "altitude_m", "range_m", "payload_kg_est"]] >= 0).all().all()
    assert (table["approach_speed_mps"].abs() <= table["speed_mps"] + 3.0).all()
    # An undetected link reads "none" in both categories and the sentinels in the RF numbers.
    silent = table["rf_protocol"] == "none"
    assert 0 < silent.sum() < len(table)
    assert (silent == (table["rf_band"] == "none")).all()
    assert (table.loc[silent, "rf_power_dbm"] == NO_LINK_POWER_DBM).all()
    assert (table.loc[silent, ["rf_bandwidth_mhz", "hop_rate_hz"]] == 0.0).all().all()
    assert (table.loc[~silent, "rf_power_dbm"] > NO_LINK_POWER_DBM).all()
    meta = json.loads((tmp_path / "attr" / "simulation.json").read_text())
    assert meta["generator"] == GENERATOR_VERSION
    assert (meta["count"], meta["seed"]) == (202, 1)
    assert meta["classes"] == CLASSES
    assert meta["features"] == FEATURES
    assert meta["id_column"] == "id"
    assert meta["table"] == "attribution.parquet"
    assert meta["sentinels"]["rf_power_dbm"] == NO_LINK_POWER_DBM


def test_csv_by_suffix_holds_the_same_events(tmp_path):
    csv = simulate_attribution(str(tmp_path / "out" / "events.csv"), 40, seed=2)
    parquet = simulate_attribution(str(tmp_path / "p" / "events.parquet"), 40, seed=2)
    assert csv.table_uri == str(tmp_path / "out" / "events.csv")
    assert json.loads((tmp_path / "out" / "simulation.json").read_text())["table"] == "events.csv"
    from_csv, from_parquet = pd.read_csv(csv.table_uri), pd.read_parquet(parquet.table_uri)
    assert list(from_csv.columns) == list(from_parquet.columns)
    text = ["id", "label", *CATEGORICAL_FEATURES]
    pd.testing.assert_frame_equal(from_csv[text], from_parquet[text])
    np.testing.assert_allclose(from_csv[NUMERIC_FEATURES], from_parquet[NUMERIC_FEATURES], rtol=1e-5, atol=1e-9)


def test_same_seed_same_bytes_and_a_bigger_run_extends_a_smaller_one(tmp_path):
    small = simulate_attribution(str(tmp_path / "a"), 50, seed=7)
    again = simulate_attribution(str(tmp_path / "b"), 50, seed=7)
    assert (tmp_path / "a" / "attribution.parquet").read_bytes() == (
        tmp_path / "b" / "attribution.parquet"
    ).read_bytes()
    assert (small.class_counts, small.rows) == (again.class_counts, again.rows)
    bigger = pd.read_parquet(simulate_attribution(str(tmp_path / "c"), 100, seed=7).table_uri)
    first = pd.read_parquet(small.table_uri)
    pd.testing.assert_frame_equal(first, bigger.iloc[:50])
    other = pd.read_parquet(simulate_attribution(str(tmp_path / "d"), 50, seed=8).table_uri)
    assert not np.array_equal(first[NUMERIC_FEATURES].to_numpy(), other[NUMERIC_FEATURES].to_numpy())


@pytest.mark.parametrize("name", ["events.parquet", "events.csv"])
def test_ingests_with_nothing_quarantined_and_the_rf_columns_categorical(tmp_path, name):
    source = simulate_attribution(str(tmp_path / name), 200, seed=3).table_uri
    # No feature_columns: the id column is the reader's row id, every other column but the label a feature.
    result = ingest_table(source, str(tmp_path / "ds"), label_column="label")
    info = result.info
    assert result.quarantined == []
    assert info.quarantined == 0
    assert info.num_rows == 200
    assert info.classes == sorted(CLASSES)
    assert info.numeric_features == NUMERIC_FEATURES
    assert [feature.name for feature in info.categorical_features] == CATEGORICAL_FEATURES
    assert "none" in info.categorical_features[0].categories


def _nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Standardize on the training two thirds, classify the rest by the nearest class mean."""
    train = np.arange(len(labels)) % 3 != 0
    mean, std = features[train].mean(0), features[train].std(0) + 1e-9
    z = (features - mean) / std
    classes = np.unique(labels)
    centroids = np.stack([z[train & (labels == c)].mean(0) for c in classes])
    distances = ((z[~train][:, None, :] - centroids[None]) ** 2).sum(-1)
    return float((classes[distances.argmin(1)] == labels[~train]).mean())


def test_classes_are_learnable_but_overlap(tmp_path):
    table = pd.read_parquet(simulate_attribution(str(tmp_path / "s"), 400, seed=0).table_uri)
    accuracy = _nearest_centroid_accuracy(table[NUMERIC_FEATURES].to_numpy(), table["label"].to_numpy())
    assert 2 / len(CLASSES) < accuracy < 0.95  # far above chance (0.25), far from perfect


@pytest.mark.parametrize(
    ("count", "seed", "message"),
    [(3, 0, "count must be at least 4"), (0, 0, "count must be at least 4"), (8, -1, "seed must be a non-negative")],
)
def test_bad_settings_raise_and_write_nothing(tmp_path, count, seed, message):
    with pytest.raises(ValueError, match=message):
        simulate_attribution(str(tmp_path / "x"), count, seed=seed)
    assert not (tmp_path / "x").exists()
