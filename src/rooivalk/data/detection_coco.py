"""The `coco` detection reader: COCO instances JSON (local or s3://).

A source is one JSON file, or a folder whose `*.json` and `annotations/*.json` files are each read.
An image's `file_name` is looked up beside the JSON file, then in an `images/` folder beside it; for a
JSON inside an `annotations/` folder, also in that folder's parent and the parent's `images/`. A JSON
file whose name holds a split token (`train.json`, `instances_val2017.json`) gives its images that split.
`bbox` is [x, y, width, height] in pixels; `iscrowd` annotations (a region of many objects, which COCO
evaluation ignores) are skipped, not quarantined. Images without annotations are negatives.

An annotation with an unknown category id, a malformed or zero-size bbox or a box past its image is
quarantined with the JSON file and the annotation id as `item_id`, and its image is left out whole (a
partially labelled image teaches that the dropped object is background). A missing image file, an
unreadable image or one whose size differs from the JSON's is quarantined too. A file that is not COCO
JSON, repeats an image or category id, or a source with no usable image raises DetectionFormatError.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from rooivalk import storage
from rooivalk.data.detection_types import (
    TOLERANCE,
    DetectionFormatError,
    DetectionReadResult,
    DetectionSample,
    canonical_uri,
    is_hidden,
    left_out,
    read_image_info,
    require_samples,
    split_from_name,
)
from rooivalk.data.source_tables import QuarantinedItem


@dataclass
class _Box:
    annotation_id: str
    label: str
    x: float
    y: float
    width: float
    height: float


@dataclass
class _Image:
    image_id: str
    file_name: str
    declared_size: tuple[int, int] | None  # (width, height) as the JSON states it
    boxes: list[_Box] = field(default_factory=list)
    bad_annotations: int = 0


def read_coco(source: str) -> DetectionReadResult:
    """Every image of the COCO source with its boxes; see the module docstring for the rules."""
    result = DetectionReadResult([], [])
    for uri in _annotation_files(source):
        part = read_coco_file(uri)
        result.samples += part.samples
        result.classes = list(dict.fromkeys(result.classes + part.classes))
        result.quarantined += part.quarantined
    return require_samples(source, result)


def _annotation_files(source: str) -> list[str]:
    root = canonical_uri(source)
    if not storage.exists(root):
        raise DetectionFormatError(f"data source not found: {source}")
    if root.lower().endswith(".json"):
        return [root]
    files = []
    for uri in storage.list_uris(root):
        relative = PurePosixPath(uri[len(root) :].lstrip("/"))
        at_top = len(relative.parts) == 1 or (len(relative.parts) == 2 and relative.parts[0] == "annotations")
        if at_top and relative.suffix.lower() == ".json" and not is_hidden(str(relative)):
            files.append(uri)
    if not files:
        raise DetectionFormatError(f"{source}: no COCO JSON file (*.json or annotations/*.json)")
    return files


def read_coco_file(uri: str) -> DetectionReadResult:
    """One instances JSON file's images."""
    document = _load(uri)
    categories = _categories(uri, document["categories"])
    quarantined: list[QuarantinedItem] = []
    images = _images(uri, document["images"], quarantined)
    for annotation in document["annotations"]:
        _add_annotation(uri, annotation, images, categories, quarantined)
    find = _image_finder(uri)
    split = split_from_name(PurePosixPath(uri).stem)
    result = DetectionReadResult([], list(dict.fromkeys(categories.values())), quarantined)
    for image in images.values():
        sample = _sample(uri, image, find, split, quarantined)
        if sample is not None:
            result.samples.append(sample)
    return result


def _load(uri: str) -> dict[str, Any]:
    try:
        document = json.loads(storage.read_bytes(uri))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DetectionFormatError(f"{uri}: not valid JSON: {error}") from None
    lists = ("images", "annotations", "categories")
    if not isinstance(document, dict) or not all(isinstance(document.get(key), list) for key in lists):
        raise DetectionFormatError(
            f"{uri}: not COCO instances JSON (needs lists 'images', 'annotations', 'categories')"
        )
    return document


def _categories(uri: str, entries: list[Any]) -> dict[str, str]:
    """category id (as text, the way annotations are matched) -> name, in id order."""
    categories: dict[int, str] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not _is_id(entry.get("id")) or "name" not in entry:
            raise DetectionFormatError(f"{uri}: category {entry!r} needs an integer 'id' and a 'name'")
        if entry["id"] in categories:
            raise DetectionFormatError(f"{uri}: category id {entry['id']} appears twice")
        categories[entry["id"]] = str(entry["name"])
    return {str(key): categories[key] for key in sorted(categories)}


def _images(uri: str, entries: list[Any], quarantined: list[QuarantinedItem]) -> dict[str, _Image]:
    images: dict[str, _Image] = {}
    for entry in entries:
        if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("file_name"), str):
            item_id = f"image {entry['id']}" if isinstance(entry, dict) and "id" in entry else None
            reason = f"malformed image entry (needs 'id' and 'file_name'): {entry!r}"
            quarantined.append(QuarantinedItem(uri, reason, item_id=item_id))
            continue
        image_id = str(entry["id"])
        if image_id in images:
            raise DetectionFormatError(f"{uri}: image id {image_id} appears twice")
        width, height = entry.get("width"), entry.get("height")
        declared = (width, height) if isinstance(width, int) and isinstance(height, int) else None
        images[image_id] = _Image(image_id, entry["file_name"], declared)
    return images


def _add_annotation(
    uri: str,
    annotation: Any,
    images: dict[str, _Image],
    categories: dict[str, str],
    quarantined: list[QuarantinedItem],
) -> None:
    """`annotation`'s box onto its image, or its quarantine entry with its image marked bad."""
    if not isinstance(annotation, dict):
        quarantined.append(QuarantinedItem(uri, f"malformed annotation {annotation!r}"))
        return
    if annotation.get("iscrowd"):
        return
    annotation_id = str(annotation.get("id"))
    image = images.get(str(annotation.get("image_id")))
    category = categories.get(str(annotation.get("category_id")))
    bbox = annotation.get("bbox")
    if image is None:
        reason = f"annotation of unknown image id {annotation.get('image_id')!r}"
    elif category is None:
        reason = f"unknown category id {annotation.get('category_id')!r}"
    elif not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(value) for value in bbox):
        reason = f"malformed bbox {bbox!r} (expected [x, y, width, height] in pixels)"
    elif bbox[2] <= 0 or bbox[3] <= 0:
        reason = f"zero or negative width/height ({bbox[2]} x {bbox[3]})"
    else:
        image.boxes.append(_Box(annotation_id, category, *(float(value) for value in bbox)))
        return
    quarantined.append(QuarantinedItem(uri, reason, item_id=annotation_id))
    if image is not None:
        image.bad_annotations += 1


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _image_finder(uri: str) -> Callable[[str], str | None]:
    """file_name -> the URI of the image it names, among the folders the module docstring lists."""
    folder = uri.rsplit("/", 1)[0]
    bases = [folder, f"{folder}/images"]
    searched = folder
    if folder.rsplit("/", 1)[-1] == "annotations":
        searched = folder.rsplit("/", 1)[0]
        bases += [searched, f"{searched}/images"]
    present = set(storage.list_uris(searched))

    def find(file_name: str) -> str | None:
        relative = PurePosixPath(file_name.replace("\\", "/"))
        candidates = (f"{base}/{relative}" for base in bases)
        return next((candidate for candidate in candidates if candidate in present), None)

    return find


def _sample(
    uri: str, image: _Image, find: Callable[[str], str | None], split: str | None, quarantined: list[QuarantinedItem]
) -> DetectionSample | None:
    image_uri = find(image.file_name)
    if image.bad_annotations:
        quarantined.append(left_out(image_uri or image.file_name, image.bad_annotations, uri))
        return None
    if image_uri is None:
        reason = f"image file not found: {image.file_name!r} (beside the JSON file or in images/)"
        quarantined.append(QuarantinedItem(uri, reason, item_id=f"image {image.image_id}"))
        return None
    info = read_image_info(image_uri)
    if isinstance(info, QuarantinedItem):
        quarantined.append(info)
        return None
    if image.declared_size is not None and image.declared_size != info.size:
        declared, actual = "x".join(map(str, image.declared_size)), "x".join(map(str, info.size))
        quarantined.append(QuarantinedItem(image_uri, f"the JSON gives the image as {declared}, the file is {actual}"))
        return None
    width, height = info.size
    outside = [box for box in image.boxes if not _inside(box, width, height)]
    for box in outside:
        reason = f"box extends past the {width}x{height} image (bbox {[box.x, box.y, box.width, box.height]})"
        quarantined.append(QuarantinedItem(uri, reason, item_id=box.annotation_id))
    if outside:
        quarantined.append(left_out(image_uri, len(outside), uri))
        return None
    corners = [(box.x, box.y, box.x + box.width, box.y + box.height) for box in image.boxes]
    scale = np.asarray([width, height, width, height], dtype=np.float64)
    boxes = np.clip(np.asarray(corners, dtype=np.float64).reshape(-1, 4), 0, scale).astype(np.float32)
    labels = [box.label for box in image.boxes]
    return DetectionSample(info.sample_id, image_uri, info.size, boxes, labels, split, uri, info.channels)


def _inside(box: _Box, width: int, height: int) -> bool:
    slack_x, slack_y = TOLERANCE * width, TOLERANCE * height
    return (
        box.x >= -slack_x
        and box.y >= -slack_y
        and box.x + box.width <= width + slack_x
        and box.y + box.height <= height + slack_y
    )
