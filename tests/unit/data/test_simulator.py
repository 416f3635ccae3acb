"""The counter-drone simulator: deterministic by seed, extends by count, writes standard formats."""

from __future__ import annotations

import json

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


def test_an_optical_crop_at_camera_resolution_shows_the_object_larger():
    """optical_field_px=size cuts the chip out of the frame at the camera's resolution: a drone that
    the default (the whole 128 px frame scaled to 32 px) shows as a few pixels covers many times the
    area ((128/32)^2 = 16 in theory); the default render is unchanged."""
    from dataclasses import replace

    from rooivalk.data.simulators.optical import _silhouette, render_optical

    scene = replace(sample_scene(np.random.default_rng(3), "military_drone"), airframe="fixed_wing", range_m=1500.0)
    whole = _silhouette(scene, 32, np.random.default_rng(0), field_px=128).sum()
    crop = _silhouette(scene, 32, np.random.default_rng(0), field_px=32).sum()
    assert whole > 0
    assert 8 < crop / whole < 20  # 16x in theory; rasterizing a few-pixel silhouette fattens the small one
    default = render_optical(scene, np.random.default_rng(5), size=32)
    assert np.array_equal(default, render_optical(scene, np.random.default_rng(5), size=32, field_px=128))


def test_the_optical_field_is_recorded_with_the_simulated_data(tmp_path):
    simulate_counter_drone(str(tmp_path), 5, seed=0, image_size=32, optical_field_px=32)
    meta = json.loads((tmp_path / "simulation.json").read_text())
    assert (meta["optical_size"], meta["optical_field_px"]) == (32, 32)


def test_motion_blur_smears_the_chip_at_every_heading_and_never_blanks_it():
    """Regression for counter-drone-sim/1: a 2-pixel blur line rotated with ndimage.rotate lost all
    its mass at most headings, and convolving with the empty kernel blanked the chip (52% of the
    demo's drone chips held no object). The kernel now keeps its mass at every heading, and a
    fast drone's chip keeps the sky's brightness."""
    from dataclasses import replace

    from rooivalk.data.simulators.optical import motion_blur_kernel, render_optical

    for length in (2, 3, 5, 7):
        for heading in np.linspace(0, 2 * np.pi, 37):
            kernel = motion_blur_kernel(length, float(heading))
            assert kernel.shape[0] % 2 == 1
            assert kernel.min() >= 0
            assert abs(kernel.sum() - 1) < 1e-9
    base = replace(sample_scene(np.random.default_rng(1), "commercial_drone"), weather="clear", range_m=300.0)
    for heading in np.linspace(0, 2 * np.pi, 13):
        still = render_optical(replace(base, motion="hover", speed_mps=0.5, heading_rad=float(heading)),
                               np.random.default_rng(2), field_px=32)  # fmt: skip
        fast = render_optical(replace(base, motion="evasive", speed_mps=20.0, heading_rad=float(heading)),
                              np.random.default_rng(2), field_px=32)  # fmt: skip
        assert abs(float(fast.mean()) - float(still.mean())) < 5  # blur moves light around, it keeps it
        assert not np.array_equal(fast, still)


def test_the_blur_check_script_counts_what_v1_blanked_and_v2_keeps():
    """scripts/optical_blur_check.py (the source of the docs' blanked-chip figures) on a small stream."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[3] / "scripts" / "optical_blur_check.py"
    result = subprocess.run([sys.executable, str(script), "--count", "300"], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["empty_kernels_by_length"]["2"]["v1"] > 60  # of 72 headings
    assert all(counts["v2"] == 0 for counts in report["empty_kernels_by_length"].values())
    assert 0 < report["drone_share_blanked_v1"] <= report["drone_share_blurred"]
    assert report["drone_share_blanked_v2"] == 0
