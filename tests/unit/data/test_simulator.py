"""The counter-drone simulator: deterministic by seed, extends by count, writes standard formats."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from rooivalk.data.simulators.counter_drone import NPZ_LAYOUT, simulate_counter_drone
from rooivalk.data.simulators.scene import CLASSES, sample_scene


def test_writes_png_folders_npz_and_a_parquet_index(tmp_path):
    result = simulate_counter_drone(str(tmp_path / "sim"), 40, seed=3, image_size=24)
    index = pd.read_parquet(result.index_uri)
    assert len(index) == 40
    assert set(index.columns) >= {"event_id", "label", "optical", "rf", "radar", "acoustic"}
    first = index.iloc[0]
    image = np.asarray(Image.open(tmp_path / "sim" / first["optical"]))
    assert image.shape == (24, 24)
    assert image.dtype == np.uint8
    assert first["optical"].startswith(f"optical/{first['label']}/")
    for sensor, (file_name, key, shape, dtype) in NPZ_LAYOUT.items():
        with np.load(tmp_path / "sim" / file_name) as archive:
            assert archive[key].shape == (40, *shape)
            assert archive[key].dtype == dtype
            assert list(archive["event_id"]) == index["event_id"].tolist()
        assert index[sensor].iloc[5] == f"{file_name}#5"
    assert sum(result.class_counts.values()) == 40


def test_same_seed_same_events_and_a_bigger_run_extends_a_smaller_one(tmp_path):
    small = simulate_counter_drone(str(tmp_path / "a"), 12, seed=7)
    again = simulate_counter_drone(str(tmp_path / "b"), 12, seed=7)
    bigger = simulate_counter_drone(str(tmp_path / "c"), 20, seed=7)
    simulate_counter_drone(str(tmp_path / "d"), 12, seed=8)
    for file_name, key, _, _ in NPZ_LAYOUT.values():
        a, b = np.load(tmp_path / "a" / file_name)[key], np.load(tmp_path / "b" / file_name)[key]
        c, d = np.load(tmp_path / "c" / file_name)[key], np.load(tmp_path / "d" / file_name)[key]
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c[:12])
        assert not np.array_equal(a, d)
    assert pd.read_parquet(small.index_uri)["label"].tolist() == pd.read_parquet(again.index_uri)["label"].tolist()
    assert bigger.count == 20


def test_every_class_is_drawn_and_sensors_are_blinded_by_the_scene():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(2000)]
    assert {s.label for s in scenes} == set(CLASSES)
    drones = [s for s in scenes if s.label.endswith("drone")]
    # Some drones fly RF-silent, fixed wings never hover, and a third of captures carry urban WiFi.
    assert 0.15 < np.mean([s.rf_link == "none" for s in drones]) < 0.5
    assert not any(s.airframe == "fixed_wing" and s.motion == "hover" for s in scenes)
    assert 0.25 < np.mean([s.rf_interference for s in scenes]) < 0.45
