"""The dataset card: what one dataset version holds, where it came from and who made it (ASPICE MLE.3).

Every ingestion writes, next to dataset.json:
    data_spec.json     the plan's data section it was ingested with (source, reader, simulator, split)
    dataset_card.json  DatasetCard: the machine-readable card, schema CARD_SCHEMA_VERSION
    dataset_card.md    the same card for people (rooivalk.data.dataset_card_markdown)

`build_dataset_card` reads only the dataset folder, so the card of an old dataset version can be made
again; two cards of one folder differ only in `created` (who made the card, when, with what). The card
inlines counts, the quarantine summary by reason and the manifest of the few array files; per-item
digests stay in the index table (samples.csv, rows.csv, ...) that the card names and digests, with one
digest per split over that table's rows of the split, so that a card stays small for any dataset size.
"""

from __future__ import annotations

import csv
import getpass
import io
import json
import os
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import numpy as np

from rooivalk import storage
from rooivalk.data.dataset import INFO_FILE, QUARANTINE_FILE, SPLIT_CODES, load_npy
from rooivalk.data.dataset_card_markdown import render_card_markdown
from rooivalk.data.dataset_card_schema import (
    Counts,
    Creation,
    DatasetCard,
    Manifest,
    QuarantineSummary,
    SourceCard,
    Sources,
    SplitCounts,
)
from rooivalk.data.multisensor_dataset import PRESENT_FILE
from rooivalk.plan import DataSpec
from rooivalk.plan.model_keys import SIMULATOR_KEYS

CARD_FILE = "dataset_card.json"
CARD_MARKDOWN_FILE = "dataset_card.md"
DATA_SPEC_FILE = "data_spec.json"
USER_ENV = "ROOIVALK_USER"
MAX_REASONS = 25  # distinct quarantine reasons listed; the rest are counted under OTHER_REASONS
OTHER_REASONS = "(other reasons)"

# kind -> (what one item is, the index table listing the items in stored order)
KINDS = {
    "image": ("images", "samples.csv"),
    "sequences": ("sequences", "sequences.csv"),
    "table": ("rows", "rows.csv"),
    "detection": ("images", "images.csv"),
    "multisensor": ("events", "events.csv"),
}


class NotADatasetError(ValueError):
    """The folder holds no finished ingestion; the one-line message names the folder and the file."""


def _kind(info: dict[str, Any]) -> str:
    if info.get("kind") == "multisensor":
        return "multisensor"
    return str(info["format"]) if info.get("format") in KINDS else "image"


def _counts(unit: str, balance: dict[str, dict[str, int]], classes: list[str], totals: dict[str, int]) -> Counts:
    """`balance`: split -> class -> count; `totals`: split -> items (for boxes, the sum of the classes)."""
    per_split = {
        split: SplitCounts(total=int(totals[split]), per_class={c: int(balance[split].get(c, 0)) for c in classes})
        for split in SPLIT_CODES
    }
    per_class = {c: sum(counts.per_class[c] for counts in per_split.values()) for c in classes}
    return Counts(unit=unit, total=sum(s.total for s in per_split.values()), per_split=per_split, per_class=per_class)


def _sources(info: dict[str, Any], spec: DataSpec | None) -> Sources:
    provenance = {str(k): int(v) for k, v in info.get("sources", {}).items()}
    if spec is None:  # a dataset older than data_spec.json: only what dataset.json recorded
        named = [SourceCard(name=info["source"], uri=info["source"], reader=None)]
        return Sources(sources=named, simulated=None, class_map={}, images_per_source=provenance)
    # Beside extra_sources, data.source's provenance name is its last path part (ingest_plan.source_name).
    first = (spec.source.rstrip("/").rsplit("/", 1)[-1] or spec.source) if spec.extra_sources else spec.source
    named = [SourceCard(name=first, uri=spec.source, reader=spec.format)]
    named += [SourceCard(name=e.name, uri=e.source, reader=e.format) for e in spec.extra_sources]
    simulated = None
    if spec.simulate is not None:  # the keys this simulator reads: the others' defaults would only mislead
        keys = ("kind", "count", "seed", *SIMULATOR_KEYS[spec.simulate.kind])
        simulated = {key: getattr(spec.simulate, key) for key in keys}
    return Sources(sources=named, simulated=simulated, class_map=dict(spec.class_map), images_per_source=provenance)


def summarize_quarantine(entries: list[dict[str, Any]]) -> dict[str, int]:
    """Entries counted by reason, most frequent first (ties by reason); past MAX_REASONS, one bucket."""
    ranked = sorted(Counter(str(e.get("reason", "")) for e in entries).items(), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(ranked[:MAX_REASONS])
    rest = sum(count for _, count in ranked[MAX_REASONS:])
    return {**kept, OTHER_REASONS: rest} if rest else kept


def _quarantine(dataset_dir: str) -> QuarantineSummary:
    uri = f"{dataset_dir}/{QUARANTINE_FILE}"
    entries: list[dict[str, Any]] = json.loads(storage.read_bytes(uri)) if storage.exists(uri) else []
    return QuarantineSummary(count=len(entries), file=QUARANTINE_FILE, by_reason=summarize_quarantine(entries))


def manifest_digest(files: dict[str, str]) -> str:
    """sha256 of the manifest in `sha256sum -c` form: "<sha256>  <file>" lines sorted by file."""
    return storage.sha256_bytes("".join(f"{digest}  {name}\n" for name, digest in sorted(files.items())).encode())


def _split_digests(index_text: str, splits: np.ndarray, index_file: str) -> dict[str, str]:
    """Per split, sha256 of the index table's data rows (CSV as stored) of that split, in stored order."""
    rows = list(csv.reader(io.StringIO(index_text)))[1:]
    if len(rows) != len(splits):
        raise storage.StorageError(f"{index_file} has {len(rows)} rows, splits.npy {len(splits)} entries")
    digests = {}
    for name, code in SPLIT_CODES.items():
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(row for row, s in zip(rows, splits, strict=True) if s == code)
        digests[name] = storage.sha256_bytes(buffer.getvalue().encode())
    return digests


def _manifest(
    dataset_dir: str, info_bytes: bytes, info: dict[str, Any], index_file: str
) -> tuple[Manifest, np.ndarray]:
    """The manifest, and the split codes (checked against dataset.json's digest) it was computed with."""
    files = {str(k): str(v) for k, v in info.get("files", {}).items()}
    index_bytes = storage.read_bytes(f"{dataset_dir}/{index_file}", sha256=info.get("index_sha256") or None)
    splits = load_npy(f"{dataset_dir}/splits.npy", files.get("splits.npy"))
    manifest = Manifest(
        info_file=INFO_FILE,
        info_sha256=storage.sha256_bytes(info_bytes),
        files=files,
        digest=manifest_digest(files),
        index_file=index_file,
        index_sha256=storage.sha256_bytes(index_bytes),
        split_digests=_split_digests(index_bytes.decode(), splits, index_file),
    )
    return manifest, splits


def _missing_modalities(dataset_dir: str, info: dict[str, Any], splits: np.ndarray) -> dict[str, dict[str, int]]:
    present = load_npy(f"{dataset_dir}/{PRESENT_FILE}", info.get("files", {}).get(PRESENT_FILE))  # bool (N, S)
    return {
        sensor["name"]: {split: int((~present[splits == code, k]).sum()) for split, code in SPLIT_CODES.items()}
        for k, sensor in enumerate(info["sensors"])
    }


def card_creator() -> str:
    """ROOIVALK_USER, else the OS user; "unknown" where neither is known (a container without a passwd entry)."""
    if os.environ.get(USER_ENV):
        return os.environ[USER_ENV]
    try:
        return getpass.getuser()
    except Exception:  # OSError, KeyError: getpass has no one answer for "no user"
        return "unknown"


def _creation() -> Creation:
    from rooivalk import __version__
    from rooivalk.tracking.runs import git_commit  # here: tracking imports mlflow, which few data users need

    at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return Creation(by=card_creator(), at=at, rooivalk_version=__version__, git_commit=git_commit())


def _require(dataset_dir: str, name: str) -> None:
    if not storage.exists(f"{dataset_dir}/{name}"):
        raise NotADatasetError(f"{dataset_dir}: not an ingested rooivalk dataset (no {name})")


def build_dataset_card(dataset_dir: str, spec: DataSpec | None = None) -> DatasetCard:
    """The card of the dataset at `dataset_dir` (local folder or s3:// prefix), from its files only.

    `spec`: the plan's data section it was ingested with; None reads data_spec.json (absent in datasets
    older than the card: the sources are then dataset.json's source alone). Raises NotADatasetError
    naming the folder and the missing file; a file that disagrees with its digest raises IntegrityError.
    """
    dataset_dir = dataset_dir.rstrip("/")
    _require(dataset_dir, INFO_FILE)
    info_bytes = storage.read_bytes(f"{dataset_dir}/{INFO_FILE}")
    info: dict[str, Any] = json.loads(info_bytes)
    kind = _kind(info)
    unit, index_file = KINDS[kind]
    for name in (index_file, "splits.npy"):
        _require(dataset_dir, name)
    if spec is None and storage.exists(f"{dataset_dir}/{DATA_SPEC_FILE}"):
        spec = DataSpec.model_validate_json(storage.read_bytes(f"{dataset_dir}/{DATA_SPEC_FILE}"))
    classes = [str(c) for c in info["classes"]]
    manifest, splits = _manifest(dataset_dir, info_bytes, info, index_file)
    balance = info["image_counts"] if kind == "detection" else info["class_balance"]
    card = DatasetCard(
        dataset_version=info["version_id"],
        kind=kind,
        format=str(info.get("format", kind)),
        classes=classes,
        split_seed=int(info["split_seed"]),
        sources=_sources(info, spec),
        counts=_counts(unit, balance, classes, info["split_sizes"]),
        quarantine=_quarantine(dataset_dir),
        manifest=manifest,
        created=_creation(),
    )
    if kind == "detection":
        box_totals = {split: sum(per_class.values()) for split, per_class in info["box_counts"].items()}
        card.boxes = _counts("boxes", info["box_counts"], classes, box_totals)
        card.negatives = {split: int(info["negatives"][split]) for split in SPLIT_CODES}
    if kind == "multisensor":
        card.missing_modalities = _missing_modalities(dataset_dir, info, splits)
    return card


def write_dataset_card(dataset_dir: str, spec: DataSpec | None = None) -> DatasetCard:
    """Build the card and write it as dataset_card.json and dataset_card.md; with `spec` (at ingestion),
    data_spec.json first, so that the card can be made again from the folder alone."""
    dataset_dir = dataset_dir.rstrip("/")
    if spec is not None:
        storage.write_text(f"{dataset_dir}/{DATA_SPEC_FILE}", spec.model_dump_json(indent=2))
    card = build_dataset_card(dataset_dir, spec)
    storage.write_text(f"{dataset_dir}/{CARD_FILE}", card.model_dump_json(indent=2) + "\n")
    storage.write_text(f"{dataset_dir}/{CARD_MARKDOWN_FILE}", render_card_markdown(card))
    return card


def read_dataset_card(dataset_dir: str) -> DatasetCard:
    """The card the ingestion wrote; a dataset older than cards gets one built (not written)."""
    dataset_dir = dataset_dir.rstrip("/")
    uri = f"{dataset_dir}/{CARD_FILE}"
    if storage.exists(uri):
        return DatasetCard.model_validate_json(storage.read_bytes(uri))
    return build_dataset_card(dataset_dir)
