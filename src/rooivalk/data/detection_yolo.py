"""The `yolo` detection reader: `images/`, `labels/` and `data.yaml` under one folder (local or s3://).

Layout: `images/<path>.<png|jpg|jpeg>` is labelled by `labels/<path>.txt`, one box a line,
`class cx cy w h` with the centre and size normalized to [0, 1]. When images sit in `images/train`,
`images/val` (or `valid`) and `images/test`, those folders are the splits and an image outside them is
quarantined; otherwise no split is given. `data.yaml` holds `names`, a list (the class id is the
position) or a mapping id -> name; its `train`/`val`/`path` keys are not read, the folders are.

An image without a label file, or with an empty one, is a negative (no boxes). A bad line (wrong field
count, a non-numeric or non-finite field, a class id that is not a non-negative integer, zero or negative
width or height, a
coordinate outside [0, 1], a box past the image's edge) is quarantined with its file and 1-based line
number as `row`, and its image is left out whole: keeping the image with the box dropped would teach
the model that the dropped object is background. A label file without an image, a file of another type
and an unreadable image are quarantined too; the rest is read. A missing or malformed `data.yaml`, or a
source with no usable image, raises DetectionFormatError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import yaml

from rooivalk import storage
from rooivalk.data.detection_types import (
    SPLIT_NAMES,
    TOLERANCE,
    DetectionFormatError,
    DetectionReadResult,
    DetectionSample,
    ImageInfo,
    canonical_uri,
    is_hidden,
    left_out,
    read_image_info,
    require_samples,
)
from rooivalk.data.readers import IMAGE_EXTENSIONS
from rooivalk.data.source_tables import QuarantinedItem

DATA_YAML = "data.yaml"
_SKIPPED_LABEL_SUFFIXES = (".cache",)  # Ultralytics' label cache beside the labels: not data


@dataclass
class _Layout:
    images: dict[str, str] = field(default_factory=dict)  # path under images/ -> URI
    labels: dict[str, str] = field(default_factory=dict)  # path under labels/ -> URI
    quarantined: list[QuarantinedItem] = field(default_factory=list)


def read_yolo(source: str) -> DetectionReadResult:
    """Every image of the YOLO folder `source` with its boxes; see the module docstring for the rules."""
    root = canonical_uri(source)
    if not storage.exists(root):
        raise DetectionFormatError(f"data source not found: {source}")
    names = read_names(f"{root}/{DATA_YAML}")
    layout = _list_layout(root)
    if not layout.images:
        raise DetectionFormatError(f"{source}: no image under images/", quarantined=layout.quarantined)
    split_layout = any(_split_of(path) for path in layout.images)
    result = DetectionReadResult([], list(dict.fromkeys(names.values())), layout.quarantined)
    used_labels: set[str] = set()
    for path, image_uri in layout.images.items():
        label_path = str(PurePosixPath(path).with_suffix(".txt"))
        used_labels.add(label_path)
        split = _split_of(path)
        if split_layout and split is None:
            splits = ", ".join(f"images/{name}" for name in SPLIT_NAMES)
            result.quarantined.append(QuarantinedItem(image_uri, f"image outside the split folders ({splits})"))
            continue
        item = _read_sample(root, image_uri, layout.labels.get(label_path), names, result.quarantined)
        if item is not None:
            result.samples.append(_sample(root, image_uri, split, *item))
    for path, label_uri in layout.labels.items():
        if path not in used_labels:
            expected = ", ".join(f"images/{PurePosixPath(path).with_suffix(ext)}" for ext in sorted(IMAGE_EXTENSIONS))
            result.quarantined.append(QuarantinedItem(label_uri, f"label file without an image (expected {expected})"))
    return require_samples(source, result)


def read_names(uri: str) -> dict[int, str]:
    """class id -> name from `data.yaml`'s `names` (a list or a mapping)."""
    if not storage.exists(uri):
        raise DetectionFormatError(f"{uri}: not found; a YOLO source needs data.yaml with the class names")
    try:
        document = yaml.safe_load(storage.read_bytes(uri))
    except yaml.YAMLError as error:
        raise DetectionFormatError(f"{uri}: not valid YAML: {error}") from None
    names = document.get("names") if isinstance(document, dict) else None
    if isinstance(names, list):
        by_id = {index: str(name) for index, name in enumerate(names)}
    elif isinstance(names, dict) and all(_is_class_id(key) for key in names):
        by_id = {int(key): str(name) for key, name in names.items()}
    else:
        raise DetectionFormatError(f"{uri}: 'names' must be a list of class names or a mapping id -> name")
    if not by_id:
        raise DetectionFormatError(f"{uri}: 'names' is empty")
    declared = document.get("nc")
    if declared is not None and declared != len(by_id):
        raise DetectionFormatError(f"{uri}: nc is {declared} but 'names' has {len(by_id)} classes")
    return dict(sorted(by_id.items()))


def _is_class_id(key: Any) -> bool:
    return (isinstance(key, int) and not isinstance(key, bool) and key >= 0) or (isinstance(key, str) and key.isdigit())


def _list_layout(root: str) -> _Layout:
    layout = _Layout()
    for uri in storage.list_uris(root):
        relative = PurePosixPath(uri[len(root) :].lstrip("/"))
        if is_hidden(str(relative)) or len(relative.parts) < 2:
            continue  # data.yaml, a README: not images or labels
        top, path = relative.parts[0], str(relative.relative_to(relative.parts[0]))
        suffix = relative.suffix.lower()
        if top == "images" and suffix in IMAGE_EXTENSIONS:
            layout.images[path] = uri
        elif top == "images":
            reason = f"not an image file (extension {suffix or '<none>'!r}; expected PNG or JPEG)"
            layout.quarantined.append(QuarantinedItem(uri, reason))
        elif top == "labels" and suffix == ".txt":
            layout.labels[path] = uri
        elif top == "labels" and suffix not in _SKIPPED_LABEL_SUFFIXES:
            layout.quarantined.append(QuarantinedItem(uri, f"not a label file (extension {suffix or '<none>'!r})"))
    return layout


def _split_of(path: str) -> str | None:
    parts = PurePosixPath(path).parts
    return SPLIT_NAMES.get(parts[0]) if len(parts) > 1 else None


_Rows = list[tuple[str, float, float, float, float]]  # (class name, cx, cy, w, h) normalized


def _read_sample(
    root: str, image_uri: str, label_uri: str | None, names: dict[int, str], quarantined: list[QuarantinedItem]
) -> tuple[ImageInfo, _Rows] | None:
    """The image's info and its label rows, or None with the reasons appended to `quarantined`."""
    rows: _Rows = []
    if label_uri is not None:
        parsed = parse_label_file(label_uri, storage.read_bytes(label_uri), names)
        if isinstance(parsed, list):
            rows = parsed
        else:
            quarantined += parsed
            quarantined.append(left_out(image_uri, len(parsed), label_uri[len(root) :].lstrip("/")))
            return None
    info = read_image_info(image_uri)
    if isinstance(info, QuarantinedItem):
        quarantined.append(info)
        return None
    return info, rows


class _BeyondNames(Exception):
    """A class id data.yaml does not name: a one-line error for the source, not a bad label (issue 30)."""

    def __init__(self, class_id: int) -> None:
        super().__init__(class_id)
        self.class_id = class_id


def parse_label_file(uri: str, data: bytes, names: dict[int, str]) -> _Rows | tuple[QuarantinedItem, ...]:
    """The file's rows, or one quarantine entry per bad line (row: the 1-based line number)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        return (QuarantinedItem(uri, f"not UTF-8 text: {error}"),)
    rows: _Rows = []
    problems: list[QuarantinedItem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parsed = parse_label_line(line, names)
        except _BeyondNames as beyond:  # data.yaml and the labels disagree: the whole source is suspect
            raise DetectionFormatError(
                f"{uri}: line {number}: class id {beyond.class_id} is beyond data.yaml's names "
                f"(ids {min(names)}..{max(names)}); fix names or the labels"
            ) from None
        if isinstance(parsed, str):
            problems.append(QuarantinedItem(uri, parsed, row=number))
        else:
            rows.append(parsed)
    return tuple(problems) if problems else rows


def parse_label_line(line: str, names: dict[int, str]) -> tuple[str, float, float, float, float] | str:
    """(class name, cx, cy, w, h), or the reason the line is bad."""
    fields = line.split()
    if len(fields) != 5:
        return f"malformed line: {len(fields)} fields, expected 5 (class cx cy w h)"
    try:
        number, cx, cy, width, height = (float(value) for value in fields)
    except ValueError:
        return f"malformed line: non-numeric field in {line.strip()!r}"
    if not all(math.isfinite(value) for value in (number, cx, cy, width, height)):
        return f"malformed line: non-finite field in {line.strip()!r}"
    if not number.is_integer() or number < 0:
        return f"malformed line: class id {fields[0]!r} is not a non-negative integer"
    if int(number) not in names:
        raise _BeyondNames(int(number))
    if width <= 0 or height <= 0:
        return f"zero or negative width/height ({fields[3]} x {fields[4]})"
    if not all(-TOLERANCE <= value <= 1 + TOLERANCE for value in (cx, cy, width, height)):
        return "coordinate out of [0, 1]"
    left, top, right, bottom = cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2
    if left < -TOLERANCE or top < -TOLERANCE or right > 1 + TOLERANCE or bottom > 1 + TOLERANCE:
        return f"box extends past the image (x {left:.6g}..{right:.6g}, y {top:.6g}..{bottom:.6g})"
    return names[int(number)], cx, cy, width, height


def _sample(root: str, image_uri: str, split: str | None, info: ImageInfo, rows: _Rows) -> DetectionSample:
    width, height = info.size
    boxes = np.zeros((len(rows), 4), dtype=np.float32)
    if rows:
        centre_size = np.asarray([row[1:] for row in rows], dtype=np.float64)  # (N, 4) cx, cy, w, h
        corners = np.concatenate(
            [centre_size[:, :2] - centre_size[:, 2:] / 2, centre_size[:, :2] + centre_size[:, 2:] / 2], 1
        )
        scale = np.asarray([width, height, width, height], dtype=np.float64)
        boxes = np.clip(corners * scale, 0, scale).astype(np.float32)  # the clip takes off the tolerance only
    return DetectionSample(
        info.sample_id, image_uri, info.size, boxes, [row[0] for row in rows], split, root, info.channels
    )
