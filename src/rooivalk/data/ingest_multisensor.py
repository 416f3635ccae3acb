"""Ingestion of multi-sensor events: a Parquet index linking each event's samples -> a dataset artifact.

The source holds `events.parquet` (columns event_id, label, and one sample reference per sensor)
next to the samples. A reference is `path.png`, `path.npy`, or `file.npz#row` (row `row` of the
archive's one sample array), relative to the source. Rules, in the order they apply:
- an empty reference or a missing file: the event is kept with that sensor masked (reported as
  `missing`, not quarantined: a sensor that saw nothing is normal in the field);
- a sample whose shape or dtype differs from the sensor's (the most common shape and dtype of that
  sensor's samples): quarantined with its path and the shapes; the event is kept with the sensor masked;
- an event left with no sensor at all: quarantined whole.
Events are ordered by event id, and the version id hashes every kept sample's content, so the
dataset is the same whatever order the index lists events in.

`ingest_events` is the pipeline's ingest step: it first simulates the source when the plan asks for
it (a missing index, or one simulated with other settings), then ingests.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rooivalk import storage
from rooivalk.data.dataset import QUARANTINE_FILE, SPLIT_CODES
from rooivalk.data.dataset_card import write_dataset_card
from rooivalk.data.ingest import IngestError, class_balance, split_samples
from rooivalk.data.multisensor_dataset import MultiSensorDataset, MultiSensorInfo, SensorInfo, save_multisensor
from rooivalk.data.readers import decode_image
from rooivalk.events import ProgressFn
from rooivalk.plan import DataSpec, Plan

INDEX_FILE = "events.parquet"
EVENTS_TABLE = "events.csv"  # in the dataset: its events in row order (index, event_id, label, sample refs)
REQUIRED_COLUMNS = ("event_id", "label")


@dataclass
class MultiSensorIngestResult:
    info: MultiSensorInfo
    quarantined: list[dict[str, str]]
    missing: dict[str, int]  # sensor -> events without its sample (kept, masked)
    metrics: dict[str, float] = field(default_factory=dict)


class _SampleReader:
    """Reads sample references relative to the source; each .npz archive is fetched and checked once."""

    def __init__(self, source: str) -> None:
        self.source = source
        # archive name -> its sample array, None when it does not exist, or why it cannot serve samples
        self._archives: dict[str, np.ndarray | str | None] = {}

    def _archive(self, name: str) -> np.ndarray | None:
        if name not in self._archives:
            uri = f"{self.source}/{name}"
            entry: np.ndarray | str | None = None
            if storage.exists(uri):
                with np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False) as archive:
                    arrays = [archive[key] for key in archive.files if key != "event_id"]
                entry = arrays[0] if len(arrays) == 1 else f"{uri}: expected one sample array, found {len(arrays)}"
            self._archives[name] = entry
        entry = self._archives[name]
        if isinstance(entry, str):
            raise ValueError(entry)
        return entry

    def read(self, reference: str) -> np.ndarray:
        """The sample; raises FileNotFoundError when absent, ValueError when unreadable."""
        path, _, row = reference.partition("#")
        uri = f"{self.source}/{path}"
        if path.endswith(".npz"):
            array = self._archive(path)
            if array is None:
                raise FileNotFoundError(uri)
            if not row.isdigit():
                raise ValueError(f"{uri}: expected a '#row' reference, got {reference!r}")
            if int(row) >= len(array):
                raise ValueError(f"{uri}: row {row} out of range ({len(array)} rows)")
            return np.asarray(array[int(row)])
        if not storage.exists(uri):
            raise FileNotFoundError(uri)
        data = storage.read_bytes(uri)
        if path.endswith(".npy"):
            return np.asarray(np.load(io.BytesIO(data), allow_pickle=False))
        if path.lower().endswith((".png", ".jpg", ".jpeg")):
            return decode_image(data)
        raise ValueError(f"{uri}: unknown sample format (expected .png, .jpg, .npy or .npz#row)")


def read_event_index(source: str) -> pd.DataFrame:
    """A multisensor source's event index, checked (readable, required columns, unique ids), by event_id."""
    uri = f"{source}/{INDEX_FILE}"
    if not storage.exists(uri):
        raise IngestError(f"{source}: no {INDEX_FILE} (the multisensor format needs an event index)")
    try:
        frame = pd.read_parquet(io.BytesIO(storage.read_bytes(uri)))
    except Exception as error:  # pyarrow raises several types on a corrupt file
        raise IngestError(f"{uri}: not a readable Parquet file: {type(error).__name__}: {error}") from None
    absent = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if absent:
        raise IngestError(f"{uri}: missing column(s) {absent}; columns are {list(frame.columns)}")
    duplicated = frame["event_id"][frame["event_id"].duplicated()].tolist()
    if duplicated:
        raise IngestError(f"{uri}: duplicate event_id(s) {duplicated[:5]}")
    return frame.sort_values("event_id", kind="stable").reset_index(drop=True)


def _expected_layout(samples: dict[str, list[np.ndarray | None]]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Per sensor, the most common (shape, dtype): the layout every sample must have."""
    layout = {}
    for sensor, items in samples.items():
        counts = Counter((item.shape, item.dtype.str) for item in items if item is not None)
        if not counts:
            raise IngestError(f"sensor {sensor!r}: no event has a readable sample")
        (shape, dtype_str), _ = counts.most_common(1)[0]
        layout[sensor] = (shape, np.dtype(dtype_str).name)
    return layout


def _version_id(event_ids: list[str], labels: list[str], arrays: dict[str, np.ndarray], present: np.ndarray,
                spec: DataSpec) -> str:  # fmt: skip
    digest = hashlib.sha256()
    # Sensors by name, not by the order they were listed in: a plan that crossed KFP as a protobuf
    # Struct comes back with its keys in another order, and the same data must keep its version.
    columns = sorted((name, column) for column, name in enumerate(arrays))
    for index, (event_id, label) in enumerate(zip(event_ids, labels, strict=True)):
        digest.update(f"{event_id}\t{label}\n".encode())
        for name, column in columns:
            if present[index, column]:
                digest.update(hashlib.sha256(np.ascontiguousarray(arrays[name][index]).tobytes()).digest())
    split = spec.split
    digest.update(json.dumps([split.train, split.val, split.test, split.seed, split.stratified]).encode())
    return f"ds-{digest.hexdigest()[:16]}"


def _read_samples(
    frame: pd.DataFrame,
    sensors: list[str],
    source: str,
    quarantined: list[dict[str, str]],
    missing: Counter[str],
    progress: Callable[[int, int], None] | None,
) -> dict[str, list[np.ndarray | None]]:
    """Every event's sample per sensor; None where it is missing (counted) or unreadable (quarantined)."""
    reader = _SampleReader(source)
    samples: dict[str, list[np.ndarray | None]] = {sensor: [] for sensor in sensors}
    for position, row in enumerate(frame.itertuples(index=False)):
        for sensor in sensors:
            reference = getattr(row, sensor)
            item: np.ndarray | None = None
            if isinstance(reference, str) and reference:
                try:
                    item = reader.read(reference)
                except FileNotFoundError:
                    item = None
                except ValueError as error:
                    quarantined.append({"origin": f"{source}/{reference}", "reason": str(error)})
            if item is None:
                missing[sensor] += 1
            samples[sensor].append(item)
        if progress is not None:
            progress(position + 1, len(frame))
    return samples


def _conform(
    frame: pd.DataFrame,
    samples: dict[str, list[np.ndarray | None]],
    layout: dict[str, tuple[tuple[int, ...], str]],
    source: str,
    quarantined: list[dict[str, str]],
    missing: Counter[str],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(present (N, S), {sensor: (N, *shape)}): samples of the sensor's layout; others quarantined."""
    sensors = list(samples)
    present = np.zeros((len(frame), len(sensors)), dtype=bool)
    arrays = {s: np.zeros((len(frame), *layout[s][0]), dtype=layout[s][1]) for s in sensors}
    for column, sensor in enumerate(sensors):
        shape, dtype = layout[sensor]
        for index, item in enumerate(samples[sensor]):
            if item is None:
                continue
            if item.shape != shape or item.dtype.name != dtype:
                quarantined.append(
                    {
                        "origin": f"{source}/{frame.at[index, sensor]}",
                        "reason": f"{sensor} sample has shape {item.shape} {item.dtype.name}; "
                        f"the sensor's samples are {shape} {dtype}",
                    }
                )
                missing[sensor] += 1
                continue
            arrays[sensor][index] = item
            present[index, column] = True
    return present, arrays


def ingest_multisensor(
    spec: DataSpec,
    dataset_dir: str,
    sensors: list[str],
    quarantine_uri: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MultiSensorIngestResult:
    """Validate, mask, quarantine, split and version the events under `spec.source`."""
    source = spec.source.rstrip("/")
    frame = read_event_index(source)
    absent = [sensor for sensor in sensors if sensor not in frame.columns]
    if absent:
        raise IngestError(f"{source}/{INDEX_FILE}: no column for sensor(s) {absent}; columns: {list(frame.columns)}")
    quarantined: list[dict[str, str]] = []
    missing: Counter[str] = Counter()
    samples = _read_samples(frame, sensors, source, quarantined, missing, progress)
    layout = _expected_layout(samples)
    present, arrays = _conform(frame, samples, layout, source, quarantined, missing)
    empty = ~present.any(axis=1)
    quarantined += [
        {"origin": f"{source}/{INDEX_FILE}#{frame.at[i, 'event_id']}", "reason": "event has no usable sensor sample"}
        for i in np.flatnonzero(empty)
    ]
    report = json.dumps(quarantined, indent=2)
    for uri in (f"{dataset_dir}/{QUARANTINE_FILE}", quarantine_uri):
        if uri:
            storage.write_text(uri, report)  # before anything below can fail: nothing is lost
    keep = ~empty
    frame = frame[keep].reset_index(drop=True)
    present, arrays = present[keep], {s: a[keep] for s, a in arrays.items()}
    classes = sorted(frame["label"].unique().tolist())
    labels = frame["label"].map({name: k for k, name in enumerate(classes)}).to_numpy(np.int64)
    codes = split_samples(labels, np.zeros(len(labels), dtype=bool), classes, spec.split, source)
    info = MultiSensorInfo(
        version_id=_version_id(frame["event_id"].tolist(), frame["label"].tolist(), arrays, present, spec),
        source=source,
        classes=classes,
        sensors=[SensorInfo(name=s, shape=layout[s][0], dtype=layout[s][1]) for s in sensors],
        num_events=len(frame),
        split_sizes={name: int((codes == code).sum()) for name, code in SPLIT_CODES.items()},
        class_balance=class_balance(labels, codes, classes),
        present={s: int(present[:, k].sum()) for k, s in enumerate(sensors)},
        split_seed=spec.split.seed,
        quarantined=len(quarantined),
    )
    storage.write_text(
        f"{dataset_dir}/{EVENTS_TABLE}", frame[["event_id", "label", *sensors]].to_csv(index_label="index")
    )
    save_multisensor(dataset_dir, MultiSensorDataset(info, arrays, present, labels, codes))  # dataset.json last
    write_dataset_card(dataset_dir, spec)  # read from the finished dataset
    metrics: dict[str, Any] = {
        "num_events": float(info.num_events),
        "num_quarantined": float(len(quarantined)),
        **{f"{s}_missing": float(missing[s]) for s in sensors},
        **{f"{name}_size": float(size) for name, size in info.split_sizes.items()},
    }
    return MultiSensorIngestResult(info, quarantined, {s: int(missing[s]) for s in sensors}, metrics)


def ensure_source(plan: Plan, progress: ProgressFn | None = None) -> None:
    """Simulate the plan's source when the plan asks for it and no event index exists there yet, or
    when the events there were simulated with other settings (then they are simulated again, so a
    changed plan never trains on stale data)."""
    # Here, not at the top: the simulators import scipy.signal (about 0.5 s), which only a simulated
    # source needs, and every importer of this module would pay it.
    from rooivalk.data.simulators.counter_drone import changed_settings, simulate_counter_drone, simulation_settings

    source = plan.data.source.rstrip("/")
    if plan.data.simulate is None:
        return
    report = progress or (lambda _event: None)
    sim = plan.data.simulate
    if storage.exists(f"{source}/{INDEX_FILE}"):
        wanted = simulation_settings(sim.count, sim.seed, sim.image_size, sim.optical_field_px)
        changed = changed_settings(source, wanted)
        if not changed:
            return
        text = f"{source}: simulated with other settings ({', '.join(changed)}); simulating again"
        report({"event": "message", "text": text})

    report({"event": "message", "text": f"simulating {sim.count} events (seed {sim.seed}) into {source}"})
    simulate_counter_drone(
        source,
        sim.count,
        sim.seed,
        sim.image_size,
        progress=lambda done, total: report({"event": "batch", "stage": "simulate", "done": done, "total": total}),
        optical_field_px=sim.optical_field_px,
    )


def ingest_events(
    plan: Plan, dataset_dir: str, quarantine_uri: str | None = None, progress: ProgressFn | None = None
) -> MultiSensorIngestResult:
    sensors, _ = plan.multisensor_parts()
    ensure_source(plan, progress)
    # Sorted: the plan's key order does not survive KFP's parameter transport, and the dataset's
    # sensor order (its presence-mask columns, the fusion tokens) should not change between runs.
    return ingest_multisensor(plan.data, dataset_dir, sorted(sensors), quarantine_uri)
