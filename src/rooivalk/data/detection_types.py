"""What the detection readers (rooivalk.data.detection_yolo, rooivalk.data.detection_coco) share: the
sample and result types, their error, and reading one image file into its id, size and channels."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

from rooivalk import storage
from rooivalk.data.readers import decode_image
from rooivalk.data.source_tables import QuarantinedItem, SourceFormatError

# How far a coordinate may stray past the image, as a fraction of its side: float rounding in the
# tools that write labels, never a real overshoot. Boxes within it are clipped to the image.
TOLERANCE = 1e-6
# Folder or file-name tokens that name a split; "valid" is Roboflow's name for val.
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "test": "test"}


class DetectionFormatError(SourceFormatError):
    """A detection source that cannot be read as a whole; the message names the file.

    `quarantined`: the entries collected before the failure, so that a caller can still report them.
    """


@dataclass(frozen=True, eq=False)
class DetectionSample:
    sample_id: str  # sha256 of the image file's bytes
    image_uri: str
    size: tuple[int, int]  # (width, height) in pixels
    boxes: np.ndarray  # float32 (N, 4): absolute pixel x1, y1, x2, y2 within the image; (0, 4) for a negative
    labels: list[str]  # (N,) the class name of each box
    split: str | None  # "train", "val" or "test" where the source's layout names one
    source: str  # provenance: the source URI a reader read, the source's name after merge_sources
    channels: int  # 1 for a grayscale image, 3 otherwise (as rooivalk.data.readers.decode_image gives)


@dataclass
class DetectionReadResult:
    samples: list[DetectionSample]
    classes: list[str]  # the declared order (YOLO names, COCO category ids), then first-seen
    quarantined: list[QuarantinedItem] = field(default_factory=list)


@dataclass(frozen=True)
class ImageInfo:
    sample_id: str
    size: tuple[int, int]  # (width, height)
    channels: int


def read_image_info(uri: str) -> ImageInfo | QuarantinedItem:
    """The image's id, size and channels, decoded in full so that truncated pixel data is found here
    rather than in training; a quarantine entry for an empty or undecodable file."""
    data = storage.read_bytes(uri)
    if not data:
        return QuarantinedItem(uri, "empty file (0 bytes)")
    try:
        image = decode_image(data)
    except Exception as error:  # Pillow's plugins raise many types on corrupt data; all mean "bad file"
        return QuarantinedItem(uri, f"cannot decode image: {type(error).__name__}: {error}")
    height, width = image.shape[:2]
    return ImageInfo(storage.sha256_bytes(data), (width, height), 1 if image.ndim == 2 else 3)


def canonical_uri(source: str) -> str:
    """`source` as rooivalk.storage.list_uris spells the files under it: an absolute local path, or
    s3://bucket/key; without a trailing slash."""
    loc = storage.parse_uri(source)
    if loc.is_s3:
        return f"s3://{loc.bucket}/{loc.key}".rstrip("/")
    return loc.key.rstrip("/") or "/"


def is_hidden(relative: str) -> bool:
    """Hidden files and folders (.DS_Store, editor swap files) are not data."""
    return any(part.startswith(".") for part in PurePosixPath(relative).parts)


def split_from_name(stem: str) -> str | None:
    """The split one token of a file stem names ("instances_train2017" -> "train"), None when no
    token or several different ones do."""
    tokens = {re.sub(r"\d+$", "", token) for token in re.split(r"[_\-.\s]+", stem.lower())}
    found = {SPLIT_NAMES[token] for token in tokens if token in SPLIT_NAMES}
    return found.pop() if len(found) == 1 else None


def left_out(image_uri: str, count: int, where: str) -> QuarantinedItem:
    """The entry for an image dropped because of its bad labels, each of which has its own entry."""
    return QuarantinedItem(image_uri, f"image left out: {count} bad label(s) in {where}")


def require_samples(source: str, result: DetectionReadResult) -> DetectionReadResult:
    if not result.samples:
        raise DetectionFormatError(
            f"{source}: no usable image ({len(result.quarantined)} quarantined)", quarantined=result.quarantined
        )
    return result
