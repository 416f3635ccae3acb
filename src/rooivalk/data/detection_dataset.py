"""The versioned object-detection dataset artifact (`data.format: yolo` / `coco`) and its ingestion.

Images are not copied: they are large and of any size, so the dataset is an index of them and of
their boxes. Layout of a detection dataset directory (written through rooivalk.storage, dataset.json last):
    dataset.json     DetectionDatasetInfo: version id, classes, channels, split sizes, per-split image
                     and box counts per class, images per source, quarantine count, digests
    images.csv       index, sample_id, image_uri, width, height, split, source (provenance)
    sizes.npy        int64 (N, 2) (width, height) of each image
    splits.npy       int8 (N,) split codes: 0 train, 1 val, 2 test
    boxes.npy        float32 (M, 4) absolute pixel x1, y1, x2, y2, grouped by image in stored order
    box_images.npy   int64 (M,) the image (row of images.csv) of each box, non-decreasing
    box_labels.npy   int64 (M,) class indices into DetectionDatasetInfo.classes
    quarantine.json  the readers' quarantine report, written before anything can fail

Images are stored in sample-id (content hash) order and the version id hashes each image's id, boxes,
labels and source split with the classes and split settings, never file order: the same data gives the
same dataset.

Splits: when every image has a split from the source's layout (and `split.use_source_test`), those
are kept; a layout of train and test only has val drawn from train in the ratio train : val. Otherwise
the split is drawn by the fractions, stratified on each image's rarest class: of the classes its boxes
hold, the one held by the fewest images of the whole dataset (ties: the earlier class); negatives (no
box) are a stratum of their own. A rare class thus reaches every split whenever it has enough images.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
from pydantic import BaseModel

import rooivalk.data.array_dataset as array_dataset
from rooivalk import storage
from rooivalk.data.dataset import SPLIT_CODES, read_info
from rooivalk.data.detection_types import DetectionReadResult, DetectionSample
from rooivalk.data.ingest import IngestError, class_balance
from rooivalk.plan import SplitSpec

FORMAT = "detection"
IMAGE_TABLE = "images.csv"
NEGATIVE_STRATUM = "(no box)"
_ARRAY_FILES = {
    "sizes.npy": np.int64,
    "splits.npy": np.int8,
    "boxes.npy": np.float32,
    "box_images.npy": np.int64,
    "box_labels.npy": np.int64,
}
_SPLIT_NAMES = {code: name for name, code in SPLIT_CODES.items()}


class DetectionDatasetInfo(BaseModel):
    format: str = FORMAT
    version_id: str
    source: str
    classes: list[str]
    channels: int  # 1 or 3, the same for every image
    num_images: int
    num_boxes: int
    num_negatives: int  # images without a box
    split_sizes: dict[str, int]  # split -> images
    image_counts: dict[str, dict[str, int]]  # split -> class -> images holding the class
    box_counts: dict[str, dict[str, int]]  # split -> class -> boxes
    negatives: dict[str, int]  # split -> images without a box
    sources: dict[str, int]  # provenance: source name (or URI) -> images
    split_seed: int
    split_from_source: bool  # splits taken from the source's layout, not drawn by the seed
    quarantined: int
    index_sha256: str = ""  # images.csv's digest, checked on load
    files: dict[str, str] = {}  # array file -> sha256, checked on load


@dataclass
class DetectionDataset:
    info: DetectionDatasetInfo
    sample_ids: list[str]  # (N,)
    image_uris: list[str]  # (N,)
    sources: list[str]  # (N,)
    sizes: np.ndarray  # int64 (N, 2) (width, height)
    splits: np.ndarray  # int8 (N,)
    boxes: np.ndarray  # float32 (M, 4)
    box_images: np.ndarray  # int64 (M,), non-decreasing
    box_labels: np.ndarray  # int64 (M,)

    @property
    def num_classes(self) -> int:
        return len(self.info.classes)

    def __len__(self) -> int:
        return len(self.sample_ids)

    def boxes_of(self, image_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(boxes float32 (n, 4), class indices int64 (n,)) of one image; n = 0 for a negative."""
        start, stop = np.searchsorted(self.box_images, [image_index, image_index + 1])
        return self.boxes[start:stop], self.box_labels[start:stop]

    def subset(self, split: str) -> DetectionDataset:
        """The images of one split and their boxes, in stored order, image indices renumbered."""
        keep = np.flatnonzero(self.splits == SPLIT_CODES[split])
        renumber = np.full(len(self), -1, dtype=np.int64)
        renumber[keep] = np.arange(len(keep))
        in_split = renumber[self.box_images] >= 0
        return replace(
            self,
            sample_ids=[self.sample_ids[i] for i in keep],
            image_uris=[self.image_uris[i] for i in keep],
            sources=[self.sources[i] for i in keep],
            sizes=self.sizes[keep],
            splits=self.splits[keep],
            boxes=self.boxes[in_split],
            box_images=renumber[self.box_images[in_split]],
            box_labels=self.box_labels[in_split],
        )


@dataclass
class DetectionIngestResult:
    info: DetectionDatasetInfo
    quarantined: list[dict[str, str | int]]
    metrics: dict[str, float] = field(default_factory=dict)


def rarest_class_strata(
    box_images: np.ndarray, box_labels: np.ndarray, num_images: int, classes: list[str]
) -> tuple[np.ndarray, list[str]]:
    """Each image's stratum (int64 (N,), compact) and the strata's names: its rarest class over the
    dataset (fewest images holding it; ties: the lower class index), NEGATIVE_STRATUM for no box."""
    num_classes = len(classes)
    pairs = np.unique(box_images * num_classes + box_labels)  # each (image, class) once
    pair_images, pair_classes = pairs // num_classes, pairs % num_classes
    images_per_class = np.bincount(pair_classes, minlength=num_classes)
    rank = images_per_class[pair_classes] * num_classes + pair_classes  # orders by (count, index)
    best = np.full(num_images, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, pair_images, rank)
    raw = np.where(best == np.iinfo(np.int64).max, num_classes, best % num_classes)
    present, strata = np.unique(raw, return_inverse=True)
    names = [classes[int(c)] if c < num_classes else NEGATIVE_STRATUM for c in present]
    return strata.astype(np.int64), names


def _check_channels(result: DetectionReadResult, source: str) -> int:
    by_channels: dict[int, list[str]] = {}
    for sample in result.samples:
        by_channels.setdefault(sample.channels, []).append(sample.image_uri)
    if len(by_channels) > 1:
        kinds = ", ".join(f"{len(uris)} of {c} channel(s) (e.g. {uris[0]})" for c, uris in sorted(by_channels.items()))
        raise IngestError(f"{source}: images of mixed channels: {kinds}; convert them to one")
    return next(iter(by_channels))


def _boxes_digest(boxes: np.ndarray) -> str:
    return storage.sha256_bytes(np.ascontiguousarray(boxes, dtype=np.float32).tobytes())


def ingest_detection(
    result: DetectionReadResult,
    dataset_dir: str,
    split: SplitSpec,
    source: str,
    quarantine_uri: str | None = None,
) -> DetectionIngestResult:
    """Index, split and version the read detection `result` (from read_yolo, read_coco or
    merge_sources) as a detection dataset at `dataset_dir`; `source` names it in messages and info.

    The quarantine report is written first. One-line IngestErrors: no image, no box at all, images of
    mixed channels, a label outside `result.classes`, a stratum too small for a stratified split.
    """
    array_dataset.write_quarantine(result.quarantined, dataset_dir, quarantine_uri)
    samples = result.samples
    if not samples:
        raise IngestError(f"{source}: no usable image ({len(result.quarantined)} quarantined)")
    if not any(sample.labels for sample in samples):
        raise IngestError(
            f"{source}: no box in {len(samples)} image(s), nothing to detect ({len(result.quarantined)} quarantined)"
        )
    channels = _check_channels(result, source)
    classes = list(result.classes)
    class_index = {name: index for index, name in enumerate(classes)}
    for sample in samples:
        unknown = sorted(set(sample.labels) - set(class_index))
        if unknown:
            raise IngestError(f"{source}: {sample.image_uri} has boxes of undeclared classes {unknown}")

    order = sorted(range(len(samples)), key=lambda i: (samples[i].sample_id, samples[i].image_uri))
    stored = [samples[i] for i in order]
    counts = [len(sample.labels) for sample in stored]
    boxes = np.concatenate([np.asarray(s.boxes, dtype=np.float32).reshape(-1, 4) for s in stored])
    box_images = np.repeat(np.arange(len(stored), dtype=np.int64), counts)
    box_labels = np.array([class_index[label] for s in stored for label in s.labels], dtype=np.int64)

    strata, strata_names = rarest_class_strata(box_images, box_labels, len(stored), classes)
    source_splits = [s.split for s in samples]
    every_split = all(s is not None for s in source_splits)
    if every_split and split.use_source_test and "train" not in source_splits:
        raise IngestError(
            f"{source}: the layout's splits hold no train image; training needs them "
            "(add them, or set split.use_source_test: false to split by the fractions)"
        )
    read_splits = [str(s) for s in source_splits] if every_split else None
    codes, from_source = array_dataset.split_codes(read_splits, order, strata, strata_names, split, source, "images")

    keys = [
        (f"{s.sample_id}:{_boxes_digest(s.boxes)}", json.dumps(s.labels), (s.split or "") if from_source else "")
        for s in stored
    ]
    box_splits = codes[box_images]
    pairs = np.unique(box_images * len(classes) + box_labels)
    info = DetectionDatasetInfo(
        version_id=array_dataset.content_version_id(keys, {"format": FORMAT, "classes": classes}, split),
        source=source,
        classes=classes,
        channels=channels,
        num_images=len(stored),
        num_boxes=len(boxes),
        num_negatives=counts.count(0),
        split_sizes={name: int((codes == code).sum()) for name, code in SPLIT_CODES.items()},
        image_counts=class_balance(pairs % len(classes), codes[pairs // len(classes)], classes),
        box_counts=class_balance(box_labels, box_splits, classes),
        negatives={name: int(((codes == code) & (np.array(counts) == 0)).sum()) for name, code in SPLIT_CODES.items()},
        sources=dict(sorted(Counter(s.source for s in stored).items())),
        split_seed=split.seed,
        split_from_source=from_source,
        quarantined=len(result.quarantined),
    )
    info.index_sha256 = storage.write_text(f"{dataset_dir}/{IMAGE_TABLE}", _image_table(stored, codes))
    sizes = np.array([s.size for s in stored], dtype=np.int64).reshape(-1, 2)
    array_dataset.save_arrays(dataset_dir, info, _ARRAY_FILES, (sizes, codes, boxes, box_images, box_labels))
    metrics = {
        "num_images": float(info.num_images),
        "num_boxes": float(info.num_boxes),
        "num_classes": float(len(classes)),
        "num_negatives": float(info.num_negatives),
        "num_quarantined": float(info.quarantined),
        **{f"{name}_size": float(size) for name, size in info.split_sizes.items()},
    }
    return DetectionIngestResult(info, [entry.as_dict() for entry in result.quarantined], metrics)


def _image_table(stored: list[DetectionSample], codes: np.ndarray) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "sample_id", "image_uri", "width", "height", "split", "source"])
    for index, (sample, code) in enumerate(zip(stored, codes, strict=True)):
        width, height = sample.size
        writer.writerow(
            [index, sample.sample_id, sample.image_uri, width, height, _SPLIT_NAMES[int(code)], sample.source]
        )
    return buffer.getvalue()


def is_detection_dataset(dataset_dir: str) -> bool:
    return array_dataset.has_format(dataset_dir, FORMAT)


def load_detection_dataset(dataset_dir: str) -> DetectionDataset:
    """Load a detection dataset artifact (local directory or s3:// prefix); the digests of the arrays
    and of images.csv are checked (storage.IntegrityError on a mismatch)."""
    info = DetectionDatasetInfo.model_validate_json(read_info(dataset_dir))
    table = storage.read_bytes(f"{dataset_dir}/{IMAGE_TABLE}", sha256=info.index_sha256 or None).decode()
    rows = list(csv.DictReader(io.StringIO(table)))
    sizes, splits, boxes, box_images, box_labels = array_dataset.load_arrays(dataset_dir, _ARRAY_FILES, info.files)
    if len(rows) != len(sizes) or (len(box_images) and np.any(np.diff(box_images) < 0)):
        raise storage.StorageError(f"{dataset_dir}: {IMAGE_TABLE} and the arrays disagree")
    return DetectionDataset(
        info,
        [row["sample_id"] for row in rows],
        [row["image_uri"] for row in rows],
        [row["source"] for row in rows],
        sizes,
        splits,
        boxes,
        box_images,
        box_labels,
    )
