"""Multi-sensor counter-drone events: the offline stand-in for real optical, RF, radar and acoustic data.

`simulate_counter_drone(out_uri, count, seed)` draws `count` scenes and renders each through the
four sensors. It writes standard formats through rooivalk.storage (a local folder or s3:// prefix):

    optical/<class>/<event_id>.png   grayscale camera chips (a PNG folder any image tool reads)
    rf.npz                           event_id (N,) str, iq (N, 4096) complex64
    radar.npz                        event_id (N,) str, tracks (N, 32, 8) float32
    acoustic.npz                     event_id (N,) str, clips (N, 4096) float32 at 16 kHz
    events.parquet                   one row per event: event_id, label, the four sample references
                                     (optical path; npz name and row), and the scene's variables
    simulation.json                  count, seed, classes, shapes, generator version

Deterministic by seed: the same (count, seed) writes byte-identical arrays, and event i is the same
whatever `count` is (each event has its own generator spawned from the seed), so a bigger simulation
extends a smaller one.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from rooivalk import storage
from rooivalk.data.simulators.acoustic import CLIP_SAMPLES, SAMPLE_RATE, render_acoustic
from rooivalk.data.simulators.optical import FRAME_PX, render_optical
from rooivalk.data.simulators.radar import FEATURES, TRACK_STEPS, render_radar
from rooivalk.data.simulators.rf import CAPTURE_SAMPLES, render_rf
from rooivalk.data.simulators.scene import CLASSES, Scene, sample_scene

# /2: the optical motion blur keeps the chip (under /1 a 2-pixel blur blanked 52% of the demo's drone
# chips; scripts/optical_blur_check.py counts them).
GENERATOR_VERSION = "counter-drone-sim/2"
INDEX_FILE = "events.parquet"
META_FILE = "simulation.json"
# Settings added after data was first simulated, with the value such older data was made with.
_SETTING_DEFAULTS: dict[str, object] = {"optical_field_px": FRAME_PX}
SENSORS = ("optical", "rf", "radar", "acoustic")
# Where each array sensor's samples live inside its .npz, and the sample shape and dtype a reader expects.
NPZ_LAYOUT = {
    "rf": ("rf.npz", "iq", (CAPTURE_SAMPLES,), np.complex64),
    "radar": ("radar.npz", "tracks", (TRACK_STEPS, len(FEATURES)), np.float32),
    "acoustic": ("acoustic.npz", "clips", (CLIP_SAMPLES,), np.float32),
}


def simulation_settings(count: int, seed: int, image_size: int, optical_field_px: int = FRAME_PX) -> dict[str, object]:
    """What decides the simulated events: written to simulation.json, compared before data is reused."""
    return {"generator": GENERATOR_VERSION, "count": count, "seed": seed, "optical_size": image_size,
            "optical_field_px": optical_field_px}  # fmt: skip


def changed_settings(out_uri: str, wanted: dict[str, object]) -> list[str]:
    """How the events simulated under `out_uri` differ from `wanted` (a `simulation_settings`), as
    'key old -> new'; empty when they match."""
    if not storage.exists(f"{out_uri}/{META_FILE}"):
        return [f"{META_FILE} is missing"]
    written = json.loads(storage.read_bytes(f"{out_uri}/{META_FILE}"))
    changed = []
    for key, value in wanted.items():
        old = written.get(key, _SETTING_DEFAULTS.get(key))
        if old != value:
            changed.append(f"{key} {old} -> {value}")
    return changed


@dataclass(frozen=True)
class SimulationResult:
    out_uri: str
    count: int
    class_counts: dict[str, int]
    index_uri: str


def event_scenes(seed: int, count: int) -> Iterator[Scene]:
    """The ground truth of events 0..count-1 of stream `seed`, as `simulate_counter_drone` draws them
    (without rendering any sensor)."""
    # One child stream per event: event i does not depend on how many events follow it.
    for child in np.random.SeedSequence(seed).spawn(count):
        yield sample_scene(np.random.default_rng(child))


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def render_event(scene: Scene, image_size: int, optical_field_px: int = FRAME_PX) -> dict[str, np.ndarray]:
    """The four sensors' samples of one scene; each sensor has its own stream derived from the scene seed."""
    streams = np.random.SeedSequence(scene.seed).spawn(len(SENSORS))
    rng = {name: np.random.default_rng(stream) for name, stream in zip(SENSORS, streams, strict=True)}
    return {
        "optical": render_optical(scene, rng["optical"], size=image_size, field_px=optical_field_px),
        "rf": render_rf(scene, rng["rf"]),
        "radar": render_radar(scene, rng["radar"]),
        "acoustic": render_acoustic(scene, rng["acoustic"]),
    }


def simulate_counter_drone(
    out_uri: str,
    count: int,
    seed: int = 0,
    image_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    optical_field_px: int = FRAME_PX,
) -> SimulationResult:
    """Simulate `count` events and write them under `out_uri` (the index last, so a reader never sees
    an index whose samples are not all written)."""
    if count < len(CLASSES):
        raise ValueError(f"count must be at least {len(CLASSES)} (one event per class), got {count}")
    rows: list[dict[str, object]] = []
    arrays: dict[str, list[np.ndarray]] = {name: [] for name in NPZ_LAYOUT}
    for index, scene in enumerate(event_scenes(seed, count)):
        event_id = f"ev{seed:04d}-{index:07d}"
        samples = render_event(scene, image_size, optical_field_px)
        optical_path = f"optical/{scene.label}/{event_id}.png"
        storage.write_bytes(f"{out_uri}/{optical_path}", _png_bytes(samples["optical"]))
        row: dict[str, object] = {"event_id": event_id, "label": scene.label, "optical": optical_path}
        for name, (file_name, _, _, _) in NPZ_LAYOUT.items():
            arrays[name].append(samples[name])
            row[name] = f"{file_name}#{index}"
        row.update({f"scene_{key}": value for key, value in scene.as_row().items() if key != "label"})
        rows.append(row)
        if progress is not None:
            progress(index + 1, count)
    event_ids = np.array([str(row["event_id"]) for row in rows])
    for name, (file_name, key, _, dtype) in NPZ_LAYOUT.items():
        stacked: np.ndarray = np.stack(arrays[name]).astype(dtype)
        storage.write_bytes(f"{out_uri}/{file_name}", _npz_bytes({"event_id": event_ids, key: stacked}))
    frame = pd.DataFrame(rows)
    meta = {
        **simulation_settings(count, seed, image_size, optical_field_px),
        "classes": CLASSES,
        "rf_samples": CAPTURE_SAMPLES,
        "radar_steps": TRACK_STEPS,
        "radar_features": FEATURES,
        "acoustic_samples": CLIP_SAMPLES,
        "acoustic_sample_rate": SAMPLE_RATE,
    }
    storage.write_text(f"{out_uri}/{META_FILE}", json.dumps(meta, indent=2))
    index_uri = f"{out_uri}/{INDEX_FILE}"
    storage.write_bytes(index_uri, _parquet_bytes(frame))
    counts = frame["label"].value_counts()
    return SimulationResult(out_uri, count, {name: int(counts.get(name, 0)) for name in CLASSES}, index_uri)
