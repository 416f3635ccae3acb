"""The `example_csv_images` reader: grayscale images as CSV rows `label,p0,p1,...` (MNIST-in-CSV style).

`data.source` is one .csv file or a folder (an s3:// prefix) of them. A first row whose first cell is
`label` is a header. Each row is one square image, pixel values 0..255 in row-major order; a row that
cannot be one (a wrong count, a value out of range, no label) is quarantined with its reason, never
fatal. Everything is read through rooivalk.storage, so S3 sources work as local ones do.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np

from rooivalk import storage
from rooivalk.data.readers import DataFormatError, Quarantined, RawSample, ReadResult


def _csv_uris(source: str) -> list[str]:
    if source.lower().endswith(".csv"):
        return [source]
    uris = [uri for uri in storage.list_uris(source) if uri.lower().endswith(".csv")]
    if not uris:
        raise DataFormatError(f"{source}: no .csv files (example_csv_images reads label,p0,p1,... rows)")
    return uris


def _parse_row(origin: str, row: list[str]) -> RawSample | Quarantined:
    label, values = (row[0].strip(), row[1:]) if row else ("", [])
    if not label:
        return Quarantined(origin, "no label in the first column")
    side = math.isqrt(len(values))
    if side < 2 or side * side != len(values):
        return Quarantined(origin, f"{len(values)} pixel values do not make a square image")
    try:
        pixels = np.array([int(value) for value in values], dtype=np.int64)
    except ValueError:
        return Quarantined(origin, "a pixel value is not an integer")
    if pixels.min() < 0 or pixels.max() > 255:
        return Quarantined(origin, "pixel values must be 0..255")
    image = pixels.astype(np.uint8).reshape(side, side)
    return RawSample(origin=origin, label=label, data=",".join(row).encode(), image=image)


def read_csv_images(source: str) -> ReadResult:
    samples: list[RawSample] = []
    quarantined: list[Quarantined] = []
    for uri in _csv_uris(source):
        rows = csv.reader(io.StringIO(storage.read_bytes(uri).decode("utf-8", errors="replace")))
        for index, row in enumerate(rows):
            if index == 0 and row and row[0].strip().lower() == "label":
                continue
            if not row:
                continue
            item = _parse_row(f"{uri}#{index}", row)
            if isinstance(item, RawSample):
                samples.append(item)
            else:
                quarantined.append(item)
    return ReadResult(samples, quarantined, classes=sorted({sample.label for sample in samples}))
