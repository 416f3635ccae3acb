"""Object-detection sources: the `yolo` and `coco` readers and the merge of several sources into one.

Each reader returns a DetectionReadResult: one DetectionSample per usable image (its id is the sha256
of the image file, its boxes absolute pixel xyxy) and a quarantine entry for every bad label, image or
file, named by file and line (YOLO, `row`, 1-based) or annotation id (COCO, `item_id`). An image with a
bad label is left out whole rather than kept with the box dropped, which would teach the model that the
dropped object is background. The rules of each format are in rooivalk.data.detection_yolo and
rooivalk.data.detection_coco. All reads go through rooivalk.storage: a source is a local path or s3://.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from rooivalk.data.detection_coco import read_coco
from rooivalk.data.detection_types import DetectionFormatError, DetectionReadResult, DetectionSample
from rooivalk.data.detection_yolo import read_yolo
from rooivalk.data.source_tables import QuarantinedItem

__all__ = [
    "DetectionFormatError",
    "DetectionReadResult",
    "DetectionSample",
    "merge_sources",
    "read_coco",
    "read_yolo",
]


def merge_sources(
    results: list[tuple[str, DetectionReadResult]], class_map: Mapping[str, str | None] | None = None
) -> DetectionReadResult:
    """Several named sources as one: each sample's `source` becomes its source's name.

    `class_map` renames classes ({"Fish": "fish"}; two names may map to one); a class mapped to "" or
    None has its boxes dropped, so that an image holding only such boxes becomes a negative: the class
    is declared background. A key that no source declares is an error (a typo would otherwise be
    ignored). The classes are the sources' declared classes, renamed, in first-seen order, so adding a
    source never moves an existing class. The same image content twice (in two sources, or twice in
    one) is kept once, the first one read, and the repeat is quarantined with item_id its sample id.
    Raises DetectionFormatError when no box is left: a dataset with nothing to detect.
    """
    names = [name for name, _ in results]
    if not names or any(not name for name in names) or len(set(names)) != len(names):
        raise ValueError(f"merge_sources needs one or more sources with distinct non-empty names, got {names}")
    mapping = dict(class_map or {})
    declared = {label for _, result in results for label in result.classes}
    unknown = sorted(set(mapping) - declared)
    if unknown:
        raise DetectionFormatError(
            f"class_map renames {unknown}, which no source declares (classes: {sorted(declared)})"
        )
    merged = DetectionReadResult([], [], [])
    first_seen: dict[str, tuple[str, str]] = {}  # sample id -> (source name, image URI)
    for name, result in results:
        merged.quarantined += result.quarantined
        renamed = (mapping.get(label, label) for label in result.classes)
        merged.classes = list(dict.fromkeys([*merged.classes, *(label for label in renamed if label)]))
        for sample in result.samples:
            if sample.sample_id in first_seen:
                kept_source, kept_uri = first_seen[sample.sample_id]
                reason = f"duplicate image: same content as {kept_uri} (source {kept_source!r}), kept once"
                merged.quarantined.append(QuarantinedItem(sample.image_uri, reason, item_id=sample.sample_id))
                continue
            first_seen[sample.sample_id] = (name, sample.image_uri)
            merged.samples.append(_renamed(sample, name, mapping))
    if not any(len(sample.labels) for sample in merged.samples):
        raise DetectionFormatError(
            f"sources {names}: no valid box in {len(merged.samples)} image(s) ({len(merged.quarantined)} quarantined)",
            quarantined=merged.quarantined,
        )
    return merged


def _renamed(sample: DetectionSample, source: str, mapping: Mapping[str, str | None]) -> DetectionSample:
    labels = [mapping.get(label, label) for label in sample.labels]
    keep = [index for index, label in enumerate(labels) if label]
    return replace(sample, boxes=sample.boxes[keep], labels=[str(labels[index]) for index in keep], source=source)
