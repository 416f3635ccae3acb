"""The ingest step's entry point: a plan's data section -> a versioned dataset, whatever its format.

Image formats and reader plugins go through rooivalk.data.ingest; `sequences` and `table` through
their own readers (rooivalk.data.sequence_dataset, rooivalk.data.table_dataset), `yolo` and `coco`
through the detection readers (rooivalk.data.detection_reader) into a detection dataset
(rooivalk.data.detection_dataset), after simulating the source when the plan asks for it and it is
missing or was simulated with other settings. Every format
writes quarantine.json before anything can fail, class_balance.png, and dataset.json, then the dataset
card (data_spec.json, dataset_card.json, dataset_card.md), which is read from the finished dataset.
(`multisensor` has its own step, rooivalk.data.ingest_multisensor.)
"""

from __future__ import annotations

import json
from typing import Any

from rooivalk import storage
from rooivalk.data.dataset_card import write_dataset_card
from rooivalk.data.detection_dataset import DetectionIngestResult, ingest_detection
from rooivalk.data.detection_types import DetectionFormatError
from rooivalk.data.ingest import BALANCE_PLOT_FILE, IngestError, IngestResult, plot_class_balance
from rooivalk.data.ingest import ingest_data as ingest_images
from rooivalk.data.sequence_dataset import SequenceIngestResult, ingest_sequences
from rooivalk.data.source_tables import SIMULATION_META, SourceFormatError
from rooivalk.data.table_dataset import TableIngestResult, ingest_table
from rooivalk.plan import ARRAY_FORMATS, DETECTION_FORMATS, DataSpec, SimulationSpec

AnyIngestResult = IngestResult | SequenceIngestResult | TableIngestResult | DetectionIngestResult
DETECTION_SIMULATORS = ("drone_frames", "shapes")


def ingest_data(spec: DataSpec, dataset_dir: str, quarantine_uri: str | None = None) -> AnyIngestResult:
    """Read, validate, split and version `spec.source` into a dataset artifact at `dataset_dir`, with
    its dataset card (rooivalk.data.dataset_card) beside dataset.json."""
    result = _ingest(spec, dataset_dir, quarantine_uri)
    write_dataset_card(dataset_dir, spec)
    return result


def _ingest(spec: DataSpec, dataset_dir: str, quarantine_uri: str | None) -> AnyIngestResult:
    if spec.format in DETECTION_FORMATS:
        return _ingest_detection(spec, dataset_dir, quarantine_uri)
    if spec.format not in ARRAY_FORMATS:
        return ingest_images(spec, dataset_dir, quarantine_uri)
    if spec.simulate is not None:
        simulate_source(spec.source, spec.simulate)
    if not storage.exists(spec.source):
        raise IngestError(f"data source not found: {spec.source}")
    try:
        result = _ingest_arrays(spec, dataset_dir, quarantine_uri)
    except SourceFormatError as error:
        raise IngestError(str(error)) from None
    classes = result.info.classes
    storage.write_bytes(f"{dataset_dir}/{BALANCE_PLOT_FILE}", plot_class_balance(result.info.class_balance, classes))
    return result


def _ingest_detection(spec: DataSpec, dataset_dir: str, quarantine_uri: str | None) -> DetectionIngestResult:
    from rooivalk.data.detection_reader import merge_sources, read_coco, read_yolo

    if spec.simulate is not None:
        simulate_source(spec.source, spec.simulate)
    try:
        read = read_yolo(spec.source) if spec.format == "yolo" else read_coco(spec.source)
        if spec.extra_sources or spec.class_map:
            names = [source_name(spec.source), *(extra.name for extra in spec.extra_sources)]
            if len(set(names)) != len(names):
                raise IngestError(f"data.extra_sources: source names must differ from each other and {names[0]!r}")
            named = [(names[0], read)]
            for extra in spec.extra_sources:
                named.append(
                    (extra.name, read_yolo(extra.source) if extra.format == "yolo" else read_coco(extra.source))
                )
            read = merge_sources(named, spec.class_map)
        result = ingest_detection(read, dataset_dir, spec.split, spec.source, quarantine_uri)
    except (DetectionFormatError, SourceFormatError) as error:
        raise IngestError(str(error)) from None
    # Boxes per class and split: what a detector learns from (images per class are in dataset.json).
    balance = result.info.box_counts
    storage.write_bytes(f"{dataset_dir}/{BALANCE_PLOT_FILE}", plot_class_balance(balance, result.info.classes))
    return result


def source_name(source: str) -> str:
    """data.source's provenance name beside extra_sources: its last path part (`/data/fish/` -> fish)."""
    return source.rstrip("/").rsplit("/", 1)[-1] or source


def _ingest_arrays(
    spec: DataSpec, dataset_dir: str, quarantine_uri: str | None
) -> SequenceIngestResult | TableIngestResult:
    if spec.format == "sequences":
        return ingest_sequences(
            spec.source,
            dataset_dir,
            length=spec.sequence.length,
            split=spec.split,
            label_column=spec.label,
            step_column=spec.sequence.step,
            feature_columns=spec.features,
            quarantine_uri=quarantine_uri,
        )
    return ingest_table(
        spec.source,
        dataset_dir,
        split=spec.split,
        label_column=spec.label,
        feature_columns=spec.features,
        categorical_columns=spec.categorical,
        quarantine_uri=quarantine_uri,
    )


def _simulated_with(source: str) -> dict[str, Any] | None:
    """The settings of the simulation that wrote `source`, or None when no simulator wrote it: the
    simulators put simulation.json beside a table file (naming the table) or inside a folder source."""
    is_file = source.lower().endswith((".parquet", ".csv"))
    folder = source.rsplit("/", 1)[0] if is_file and "/" in source else "." if is_file else source.rstrip("/")
    meta_uri = f"{folder}/{SIMULATION_META}"
    if not storage.exists(meta_uri):
        return None
    settings: dict[str, Any] = json.loads(storage.read_bytes(meta_uri))
    if is_file and settings.get("table") != source.rsplit("/", 1)[-1]:
        return None  # the metadata of another simulated table in the same folder: this file is the user's
    return settings


def simulate_source(source: str, simulate: SimulationSpec) -> bool:
    """Write `source` with the plan's simulator when it is missing or was simulated with other settings;
    returns whether it simulated. (Imports on use: only simulated plans pay for the simulators.)"""
    if simulate.kind in DETECTION_SIMULATORS:
        return _simulate_frames(source, simulate)
    if simulate.kind == "sign_language":
        from rooivalk.data.simulators import sign_language

        wanted = sign_language.simulation_settings(
            simulate.count, simulate.seed, simulate.num_classes, simulate.min_length, simulate.max_length
        )
    elif simulate.kind == "attribution":
        from rooivalk.data.simulators import attribution

        wanted = attribution.simulation_settings(simulate.count, simulate.seed)
    else:
        raise IngestError(f"data.simulate.kind {simulate.kind} writes multisensor data, ingested by ingest_events")
    previous = _simulated_with(source) if storage.exists(source) else None
    if storage.exists(source) and (previous is None or all(previous.get(k) == v for k, v in wanted.items())):
        return False  # the user's own file (no simulation.json), or the same simulation
    if simulate.kind == "sign_language":
        sign_language.simulate_sign_language(
            source, simulate.count, simulate.seed, simulate.num_classes, simulate.min_length, simulate.max_length
        )
    else:
        attribution.simulate_attribution(source, simulate.count, simulate.seed)
    return True


def _simulate_frames(source: str, simulate: SimulationSpec) -> bool:
    """A YOLO folder of simulated frames with boxes (rooivalk.data.simulators.detection_frames), rewritten
    when its simulation.json records other settings; a folder without one is the user's and is kept."""
    import shutil
    from pathlib import Path

    from rooivalk.data.simulators.detection_frames import simulate_detection_frames

    if source.startswith("s3://"):
        raise IngestError(f"data.simulate writes a local folder; data.source is {source}")
    wanted = {
        "kind": simulate.kind,
        "count": simulate.count,
        "seed": simulate.seed,
        "frame_width": simulate.frame_width,
        "frame_height": simulate.frame_height,
        "max_objects": simulate.max_objects,
    }
    previous = _simulated_with(source) if storage.exists(source) else None
    if storage.exists(source) and (previous is None or previous == wanted):
        return False
    if previous is not None:
        shutil.rmtree(source)  # an earlier simulation of other settings, never a user's folder
    simulate_detection_frames(
        source,
        "counter_drone" if simulate.kind == "drone_frames" else "shapes",
        images=simulate.count,
        width=simulate.frame_width,
        height=simulate.frame_height,
        seed=simulate.seed,
        max_objects=simulate.max_objects,
    )
    (Path(source) / SIMULATION_META).write_text(json.dumps(wanted, indent=2))
    return True
