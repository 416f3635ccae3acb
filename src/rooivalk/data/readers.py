"""Readers that turn a raw data source into decoded samples and quarantine entries.

A reader never crashes on one bad file: whatever cannot become a sample is returned as a
`Quarantined` entry with a reason, so that ingestion can report it instead of losing it. Errors that
make the whole source unreadable (a bad IDX header) raise `DataFormatError` naming the file.
All reads go through rooivalk.storage, so a source may be a local directory or an s3:// prefix.
`data.format` names the reader (rooivalk.data.reader_registry); installed packages add readers.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import Literal

import numpy as np
from PIL import Image

from rooivalk import storage
from rooivalk.data.reader_registry import get_reader, known_readers, register_reader

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg"})
# Modes that carry no colour: `channels: auto` resolves to 1 only when every image is one of these.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
_IDX_PARTS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}  # fmt: skip
_IDX_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one image datasets use


class DataFormatError(ValueError):
    """A source that cannot be read as its declared format; the message names the file."""


@dataclass(frozen=True)
class RawSample:
    origin: str  # URI of the file, or "<file>#<index>" for samples packed in one file
    label: str  # class name
    data: bytes | None  # the raw sample as stored; its sha256 is the sample id
    image: np.ndarray | None  # decoded uint8, (H, W) grayscale or (H, W, 3) RGB
    official_test: bool = False  # part of the source's own test set (idx: the t10k files)

    @property
    def sample_id(self) -> str:
        if self.data is not None:
            return storage.sha256_bytes(self.data)
        if self.image is None:
            raise ValueError(f"{self.origin}: a sample needs data or an image")
        return storage.sha256_bytes(np.ascontiguousarray(self.image).tobytes())


@dataclass(frozen=True)
class Quarantined:
    origin: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"origin": self.origin, "reason": self.reason}


@dataclass
class ReadResult:
    samples: list[RawSample]
    quarantined: list[Quarantined]
    classes: list[str]  # canonical order: a label's class index is its position here


def _is_hidden(relative: PurePath) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _grayscale_array(image: Image.Image) -> np.ndarray:
    if image.mode.startswith("I"):
        # 16/32-bit grayscale holds 0..65535: keep the top byte rather than clipping at 255.
        return (np.asarray(image).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
    if image.mode == "F":
        return np.asarray(image).clip(0, 255).astype(np.uint8)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def decode_image(data: bytes) -> np.ndarray:
    """Encoded PNG/JPEG bytes -> uint8 (H, W) for grayscale modes, (H, W, 3) otherwise."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # open() reads only the header; load() finds truncated or corrupt pixel data
        if image.mode in GRAYSCALE_MODES:
            return _grayscale_array(image)
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _check_image_file(uri: str, relative: PurePosixPath) -> Quarantined | RawSample:
    if len(relative.parts) < 2:
        return Quarantined(uri, "file outside any class folder (expected <class>/<file>)")
    suffix = relative.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        return Quarantined(uri, f"not an image file (extension {suffix or '<none>'!r}; expected PNG or JPEG)")
    data = storage.read_bytes(uri)
    if not data:
        return Quarantined(uri, "empty file (0 bytes)")
    try:
        image = decode_image(data)
    except Exception as error:  # Pillow's plugins raise many types on corrupt data; all mean "bad file"
        return Quarantined(uri, f"cannot decode image: {type(error).__name__}: {error}")
    return RawSample(origin=uri, label=relative.parts[0], data=data, image=image)


def _empty_local_class_dirs(root: Path) -> list[Quarantined]:
    # A local class folder with no files never shows up in a file listing; on S3 a "folder"
    # exists only through its objects, so this case cannot arise there.
    empty = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            visible = [p for p in child.rglob("*") if p.is_file() and not _is_hidden(p.relative_to(child))]
            if not visible:
                empty.append(Quarantined(str(child), "empty class folder"))
    return empty


def iter_image_folder(source: str) -> Iterator[RawSample | Quarantined]:
    """Samples and quarantine entries of a `<class>/<image>` tree, in listing order."""
    loc = storage.parse_uri(source)
    if loc.is_s3:
        root = f"s3://{loc.bucket}/{loc.key.rstrip('/')}".rstrip("/") + "/"
    else:
        if not Path(loc.key).is_dir():
            raise DataFormatError(f"{source}: image_folder source must be a directory")
        root = loc.key.rstrip("/") + "/"
        yield from _empty_local_class_dirs(Path(loc.key))
    for uri in storage.list_uris(source):
        relative = PurePosixPath(uri[len(root) :] if uri.startswith(root) else Path(uri).name)
        if not _is_hidden(relative):
            yield _check_image_file(uri, relative)


@register_reader("image_folder")
def read_image_folder(source: str) -> ReadResult:
    samples: list[RawSample] = []
    quarantined: list[Quarantined] = []
    for item in iter_image_folder(source):
        if isinstance(item, RawSample):
            samples.append(item)
        else:
            quarantined.append(item)
    return ReadResult(samples, quarantined, classes=sorted({s.label for s in samples}))


def parse_idx(data: bytes, name: str, ndim: int) -> np.ndarray:
    """Decode one IDX file (big-endian header: 0, 0, type code, ndim, then ndim int32 sizes)."""
    expected_magic = (_IDX_UBYTE << 8) | ndim
    if len(data) < 4:
        raise DataFormatError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DataFormatError(
            f"{name}: bad IDX magic number 0x{magic:08x} (expected 0x{expected_magic:08x}, "
            f"unsigned bytes with {ndim} dimension(s))"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(f"{name}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DataFormatError(f"{name}: IDX dims {dims} need {expected} bytes of data, found {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx_file(source: str, stem: str) -> str | None:
    for candidate in (f"{source}/{stem}", f"{source}/{stem}.gz"):
        if storage.exists(candidate):
            return candidate
    return None


def _read_idx_file(uri: str, ndim: int) -> np.ndarray:
    data = storage.read_bytes(uri)
    if uri.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise DataFormatError(f"{uri}: not a valid gzip file: {error}") from None
    return parse_idx(data, uri, ndim)


def idx_class_names(source: str, labels: Sequence[int]) -> list[str]:
    """Fashion-MNIST's names for its 10 classes, the label numbers as strings otherwise."""
    if list(labels) == list(range(10)) and "fashion" in source.lower():
        return list(FASHION_MNIST_CLASSES)
    return [str(label) for label in labels]


@register_reader("idx")
def read_idx(source: str) -> ReadResult:
    """MNIST-style IDX files; samples of the t10k files are flagged as the official test set."""
    source = source.rstrip("/")
    parts: list[tuple[str, np.ndarray, np.ndarray]] = []
    for part, (images_stem, labels_stem) in _IDX_PARTS.items():
        images_uri, labels_uri = _find_idx_file(source, images_stem), _find_idx_file(source, labels_stem)
        if images_uri is None and labels_uri is None:
            continue
        if images_uri is None or labels_uri is None:
            missing = images_stem if images_uri is None else labels_stem
            raise DataFormatError(f"{source}: {part} IDX set is missing {missing}[.gz]")
        images, labels = _read_idx_file(images_uri, 3), _read_idx_file(labels_uri, 1)
        if len(images) != len(labels):
            raise DataFormatError(f"{images_uri} has {len(images)} images but {labels_uri} has {len(labels)} labels")
        parts.append((images_uri, images, labels))
    if not parts:
        raise DataFormatError(f"{source}: no IDX files (expected train-images-idx3-ubyte[.gz] and friends)")
    label_values = sorted({int(v) for _, _, labels in parts for v in np.unique(labels)})
    names = dict(zip(label_values, idx_class_names(source, label_values), strict=True))
    samples = [
        RawSample(
            origin=f"{images_uri}#{index}",
            label=names[int(label)],
            data=image.tobytes(),
            image=image,
            official_test="t10k-" in images_uri.rsplit("/", 1)[-1],
        )
        for images_uri, images, labels in parts
        for index, (image, label) in enumerate(zip(images, labels, strict=True))
    ]
    return ReadResult(samples, [], classes=[names[v] for v in label_values])


def read_source(source: str, data_format: str) -> ReadResult:
    """The source read by the reader of `data_format` (a built-in or an installed plugin)."""
    reader = get_reader(data_format)
    if reader is None:
        raise DataFormatError(f"{source}: unknown data format {data_format!r}; image readers: {known_readers()}")
    result = reader(source)
    if not isinstance(result, ReadResult):
        raise DataFormatError(
            f"{source}: the {data_format!r} reader returned {type(result).__name__}, not a "
            "rooivalk.data.readers.ReadResult"
        )
    return result


def resolve_channels(images: Sequence[np.ndarray], channels: Literal["auto", 1, 3]) -> int:
    if channels == "auto":
        return 1 if all(image.ndim == 2 for image in images) else 3
    return channels


def _conform(image: np.ndarray, channels: int, size: int | None) -> np.ndarray:
    if size is not None and image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    if image.ndim == 2:
        return image[:, :, None] if channels == 1 else np.repeat(image[:, :, None], 3, axis=2)
    if channels == 3:
        return image
    return np.asarray(Image.fromarray(image).convert("L"))[:, :, None]


def stack_images(images: Sequence[np.ndarray], channels: Literal["auto", 1, 3], image_size: int) -> np.ndarray:
    """uint8 (N, H, W, C): native size when all images share one, else resized to image_size square."""
    if not images:
        raise ValueError("no images to stack")
    num_channels = resolve_channels(images, channels)
    sizes = {image.shape[:2] for image in images}
    height, width = next(iter(sizes)) if len(sizes) == 1 else (image_size, image_size)
    resize_to = None if len(sizes) == 1 else image_size
    out = np.empty((len(images), height, width, num_channels), dtype=np.uint8)
    for index, image in enumerate(images):
        out[index] = _conform(image, num_channels, resize_to)
    return out
