"""The sign-language simulator: deterministic by seed, extends by count, long-form table, learnable but not trivial."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rooivalk.data.simulators.sign_language import (
    FEATURES,
    GENERATOR_VERSION,
    class_names,
    hand_pose,
    simulate_sign_language,
)


def _sequences(table: pd.DataFrame) -> list[np.ndarray]:
    return [group[FEATURES].to_numpy() for _, group in table.groupby("sequence_id", sort=True)]


def test_writes_a_long_form_parquet_table_and_its_settings(tmp_path):
    result = simulate_sign_language(str(tmp_path / "signs"), 30, seed=1, num_classes=5)
    assert result.table_uri == str(tmp_path / "signs" / "sequences.parquet")
    table = pd.read_parquet(result.table_uri)
    assert list(table.columns) == ["sequence_id", "label", "step", *FEATURES]
    assert FEATURES[:3] == ["x0", "y0", "z0"]
    assert FEATURES[-3:] == ["x20", "y20", "z20"]
    assert len(FEATURES) == 63
    assert table[FEATURES].dtypes.eq(np.float32).all()
    assert np.isfinite(table[FEATURES].to_numpy()).all()
    assert len(table) == result.rows
    lengths = table.groupby("sequence_id").size()
    assert len(lengths) == 30
    assert lengths.between(20, 40).all()
    assert lengths.nunique() > 3  # lengths vary
    for _, group in table.groupby("sequence_id"):
        assert group["step"].tolist() == list(range(len(group)))
        assert group["label"].nunique() == 1
    assert result.class_counts == dict.fromkeys("ABCDE", 6)
    assert table.groupby("sequence_id")["label"].first().value_counts().to_dict() == result.class_counts
    meta = json.loads((tmp_path / "signs" / "simulation.json").read_text())
    assert meta["generator"] == GENERATOR_VERSION
    assert (meta["count"], meta["seed"], meta["num_classes"]) == (30, 1, 5)
    assert meta["classes"] == list("ABCDE")
    assert meta["features"] == FEATURES


def test_csv_by_suffix_with_its_settings_beside_it(tmp_path):
    result = simulate_sign_language(str(tmp_path / "out" / "words.csv"), 4, seed=0, num_classes=2, max_length=24)
    table = pd.read_csv(result.table_uri)
    assert list(table.columns[:3]) == ["sequence_id", "label", "step"]
    assert table.groupby("sequence_id").size().between(20, 24).all()
    assert json.loads((tmp_path / "out" / "simulation.json").read_text())["table"] == "words.csv"


def test_same_seed_same_signs_and_a_bigger_run_extends_a_smaller_one(tmp_path):
    small = pd.read_parquet(simulate_sign_language(str(tmp_path / "a"), 12, seed=7, num_classes=4).table_uri)
    again = pd.read_parquet(simulate_sign_language(str(tmp_path / "b"), 12, seed=7, num_classes=4).table_uri)
    bigger = pd.read_parquet(simulate_sign_language(str(tmp_path / "c"), 20, seed=7, num_classes=4).table_uri)
    other = pd.read_parquet(simulate_sign_language(str(tmp_path / "d"), 12, seed=8, num_classes=4).table_uri)
    pd.testing.assert_frame_equal(small, again)
    pd.testing.assert_frame_equal(small, bigger.iloc[: len(small)])
    assert bigger["sequence_id"].nunique() == 20
    assert not np.array_equal(small[FEATURES].to_numpy()[:20], other[FEATURES].to_numpy()[:20])


def test_class_names_hand_shapes_and_bad_settings(tmp_path):
    assert class_names(26)[0] == "A"
    assert class_names(26)[-1] == "Z"
    assert class_names(30)[:2] == ["word_00", "word_01"]
    open_hand, fist = hand_pose(np.zeros(5), 0.5), hand_pose(np.ones(5), 0.5)
    assert open_hand.shape == (21, 3)
    np.testing.assert_array_equal(open_hand[0], 0.0)  # the wrist is landmark 0
    tips = [4, 8, 12, 16, 20]
    assert (np.linalg.norm(fist[tips], axis=1) < np.linalg.norm(open_hand[tips], axis=1)).all()
    with pytest.raises(ValueError, match="at least num_classes"):
        simulate_sign_language(str(tmp_path / "x"), 3, num_classes=4)
    with pytest.raises(ValueError, match="min_length"):
        simulate_sign_language(str(tmp_path / "x"), 4, num_classes=4, min_length=30, max_length=20)


def _nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Standardize on the training two thirds, classify the rest by the nearest class mean."""
    train = np.arange(len(labels)) % 3 != 0
    mean, std = features[train].mean(0), features[train].std(0) + 1e-9
    z = (features - mean) / std
    classes = np.unique(labels)
    centroids = np.stack([z[train & (labels == c)].mean(0) for c in classes])
    distances = ((z[~train][:, None, :] - centroids[None]) ** 2).sum(-1)
    return float((classes[distances.argmin(1)] == labels[~train]).mean())


def test_words_are_learnable_but_not_trivial(tmp_path):
    table = pd.read_parquet(simulate_sign_language(str(tmp_path / "s"), 312, seed=0).table_uri)
    sequences = _sequences(table)
    labels = table.groupby("sequence_id", sort=True)["label"].first().to_numpy()
    time_mean = np.stack([s.mean(0) for s in sequences])
    with_motion = np.hstack([time_mean, np.stack([s.std(0) for s in sequences])])
    chance = 1 / 26
    accuracy = _nearest_centroid_accuracy(time_mean, labels)
    # Far above chance, far below perfect; how the hand moves tells more than where it rests.
    assert 3 * chance < accuracy < 0.6
    assert _nearest_centroid_accuracy(with_motion, labels) > accuracy + 0.1
