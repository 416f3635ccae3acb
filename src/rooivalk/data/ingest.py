"""Ingestion: a raw source -> a versioned, split dataset artifact (layout in rooivalk.data.dataset).

The result depends only on the samples' content, the split settings and the image shape, never on
listing order: samples are ordered by content hash before capping and splitting, and the version id
hashes exactly those inputs. Rejected files go to quarantine.json, which is written before any
failure so that nothing is lost; dataset.json is written last, so a directory without it is an
incomplete ingestion.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rooivalk import storage
from rooivalk.data.dataset import QUARANTINE_FILE, SPLIT_CODES, DatasetInfo, save_arrays, save_info
from rooivalk.data.readers import DataFormatError, RawSample, read_source, stack_images
from rooivalk.plan import DataSpec, SplitSpec

SAMPLES_FILE = "samples.csv"
BALANCE_PLOT_FILE = "class_balance.png"
_SPLIT_NAMES = {code: name for name, code in SPLIT_CODES.items()}


class IngestError(ValueError):
    """Ingestion cannot produce a dataset; the message names the source."""


@dataclass
class IngestResult:
    info: DatasetInfo
    quarantined: list[dict[str, str]]
    metrics: dict[str, float] = field(default_factory=dict)


def order_samples(samples: list[RawSample], max_per_class: int | None) -> tuple[list[RawSample], list[str]]:
    """Samples sorted by content hash (origin breaks ties between identical files), capped per class.

    Returns the kept samples and their sample ids, in the same order.
    """
    keyed = sorted(((s.sample_id, s.label, s.origin), s) for s in samples)
    kept: list[RawSample] = []
    ids: list[str] = []
    per_class: Counter[str] = Counter()
    for (sample_id, label, _), sample in keyed:
        if max_per_class is not None and per_class[label] >= max_per_class:
            continue
        per_class[label] += 1
        kept.append(sample)
        ids.append(sample_id)
    return kept, ids


def _min_per_class(fractions: list[float]) -> int:
    # Each class needs at least one sample in every split it is stratified into, and sklearn needs
    # two per class for any stratified cut; 1e-9 keeps 1/0.2 from rounding up to 6.
    return max(2, *(math.ceil(1.0 / f - 1e-9) for f in fractions if f > 0))


def _check_class_counts(labels: np.ndarray, classes: list[str], fractions: list[float], source: str) -> None:
    needed = _min_per_class(fractions)
    counts = np.bincount(labels, minlength=len(classes))
    shares = "/".join(f"{f:.2f}" for f in fractions)
    for index, count in enumerate(counts):
        if count < needed:
            raise IngestError(
                f"{source}: class {classes[index]!r} has {count} sample(s); a stratified {shares} split "
                f"needs at least {needed} per class"
            )


def _divide(
    indices: np.ndarray, labels: np.ndarray, share: float, split: SplitSpec, source: str
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split  # lazy: sklearn's import is slow

    try:
        kept, taken = train_test_split(
            indices,
            test_size=share,
            random_state=split.seed,
            stratify=labels[indices] if split.stratified else None,
        )
    except ValueError as error:
        raise IngestError(f"{source}: cannot split {len(indices)} samples: {error}") from None
    return np.asarray(kept), np.asarray(taken)


def split_samples(
    labels: np.ndarray, official_test: np.ndarray, classes: list[str], split: SplitSpec, source: str
) -> np.ndarray:
    """int8 split codes (see SPLIT_CODES) for samples in content-hash order."""
    codes = np.full(len(labels), SPLIT_CODES["train"], dtype=np.int8)
    rest = np.arange(len(labels))
    use_official = split.use_source_test and bool(official_test.any())
    if use_official:
        codes[official_test] = SPLIT_CODES["test"]
        rest = rest[~official_test]
    train_val = split.train + split.val
    fractions = (
        [split.train / train_val, split.val / train_val] if use_official else [split.train, split.val, split.test]
    )
    if split.stratified:
        _check_class_counts(labels[rest], classes, fractions, source)
    if not use_official and split.test > 0:
        rest, test = _divide(rest, labels, split.test, split, source)
        codes[test] = SPLIT_CODES["test"]
    _, val = _divide(rest, labels, split.val / train_val, split, source)
    codes[val] = SPLIT_CODES["val"]
    return codes


def dataset_version_id(
    sample_ids: list[str], labels: list[str], split: SplitSpec, image_shape: tuple[int, int, int]
) -> str:
    """'ds-' + 16 hex of sha256 over sorted (sample id, class) pairs, split settings and image shape."""
    digest = hashlib.sha256()
    for sample_id, label in sorted(zip(sample_ids, labels, strict=True)):
        digest.update(f"{sample_id}\t{label}\n".encode())
    settings = {
        "split": [split.train, split.val, split.test, split.seed, split.stratified, split.use_source_test],
        "image_shape": list(image_shape),
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return f"ds-{digest.hexdigest()[:16]}"


def class_balance(labels: np.ndarray, codes: np.ndarray, classes: list[str]) -> dict[str, dict[str, int]]:
    balance = {}
    for name, code in SPLIT_CODES.items():
        counts = np.bincount(labels[codes == code], minlength=len(classes))
        balance[name] = {cls: int(count) for cls, count in zip(classes, counts, strict=True)}
    return balance


def _samples_csv(ids: list[str], samples: list[RawSample], codes: np.ndarray) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "sample_id", "label", "split", "origin"])
    for index, (sample_id, sample, code) in enumerate(zip(ids, samples, codes, strict=True)):
        writer.writerow([index, sample_id, sample.label, _SPLIT_NAMES[int(code)], sample.origin])
    return buffer.getvalue()


def plot_class_balance(balance: dict[str, dict[str, int]], classes: list[str]) -> bytes:
    """PNG of grouped bars: one group per class, one bar per split."""
    # The object API with the Agg canvas leaves pyplot's global backend alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(min(max(6.0, 0.6 * len(classes)), 40.0), 4.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = np.arange(len(classes))
    width = 0.8 / len(balance)
    for offset, (split, counts) in enumerate(balance.items()):
        shift = (offset - (len(balance) - 1) / 2) * width
        axes.bar(positions + shift, [counts[c] for c in classes], width, label=split)
    axes.set_xticks(
        positions, classes, rotation=45 if len(classes) > 6 else 0, ha="right" if len(classes) > 6 else "center"
    )
    axes.set_ylabel("samples")
    axes.set_title("class balance per split")
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _decoded(sample: RawSample) -> np.ndarray:
    if sample.image is None:
        raise IngestError(f"{sample.origin}: the reader returned no decoded image")
    return sample.image


def _metrics(info: DatasetInfo) -> dict[str, float]:
    return {
        "num_samples": float(info.num_samples),
        "num_classes": float(len(info.classes)),
        "num_quarantined": float(info.quarantined),
        **{f"{name}_size": float(size) for name, size in info.split_sizes.items()},
    }


def _write_dataset(
    dataset_dir: str, info: DatasetInfo, arrays: tuple[np.ndarray, np.ndarray, np.ndarray], csv_text: str
) -> None:
    info.files = save_arrays(dataset_dir, *arrays)
    storage.write_text(f"{dataset_dir}/{SAMPLES_FILE}", csv_text)
    storage.write_bytes(f"{dataset_dir}/{BALANCE_PLOT_FILE}", plot_class_balance(info.class_balance, info.classes))
    save_info(dataset_dir, info)  # last: its presence marks a complete dataset


def ingest_data(spec: DataSpec, dataset_dir: str, quarantine_uri: str | None = None) -> IngestResult:
    """Read, validate, order, split and write `spec.source` as a dataset artifact at `dataset_dir`.

    The quarantine report is written (also to `quarantine_uri`, when given) before anything can fail.
    """
    source = spec.source
    if not storage.exists(source):
        raise IngestError(f"data source not found: {source}")
    try:
        read = read_source(source, spec.format)
    except DataFormatError as error:
        raise IngestError(str(error)) from None
    quarantined: list[dict[str, Any]] = [entry.as_dict() for entry in read.quarantined]
    report = json.dumps(quarantined, indent=2)
    for uri in (f"{dataset_dir}/{QUARANTINE_FILE}", quarantine_uri):
        if uri:
            storage.write_text(uri, report)
    if not read.samples:
        raise IngestError(f"no valid samples in {source}: {len(quarantined)} quarantined, see {QUARANTINE_FILE}")

    samples, ids = order_samples(read.samples, spec.max_samples_per_class)
    class_index = {name: index for index, name in enumerate(read.classes)}
    labels = np.array([class_index[s.label] for s in samples], dtype=np.int64)
    official_test = np.array([s.official_test for s in samples], dtype=bool)
    codes = split_samples(labels, official_test, read.classes, spec.split, source)
    images = stack_images([_decoded(s) for s in samples], spec.channels, spec.image_size)
    image_shape = (int(images.shape[1]), int(images.shape[2]), int(images.shape[3]))

    balance = class_balance(labels, codes, read.classes)
    info = DatasetInfo(
        version_id=dataset_version_id(ids, [s.label for s in samples], spec.split, image_shape),
        source=source,
        format=spec.format,
        classes=read.classes,
        image_shape=image_shape,
        num_samples=len(samples),
        split_sizes={name: int((codes == code).sum()) for name, code in SPLIT_CODES.items()},
        class_balance=balance,
        split_seed=spec.split.seed,
        quarantined=len(quarantined),
    )
    _write_dataset(dataset_dir, info, (images, labels, codes), _samples_csv(ids, samples, codes))
    return IngestResult(info=info, quarantined=quarantined, metrics=_metrics(info))
