"""What the sequence and table datasets share (rooivalk.data.sequence_dataset, rooivalk.data.table_dataset):
the source read with its quarantine report written before anything can fail, split codes taken from the
source's split column or drawn by the fractions, the content version id, the items' index table, and a
directory of .npy arrays whose sha256 digests dataset.json, written last, records.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
from numpy.typing import DTypeLike

from rooivalk import storage
from rooivalk.data.dataset import INFO_FILE, QUARANTINE_FILE, SPLIT_CODES, load_npy, npy_bytes
from rooivalk.data.ingest import IngestError, split_samples
from rooivalk.data.source_tables import QuarantinedItem, SourceFormatError
from rooivalk.plan import SplitSpec

_SPLIT_NAMES = {code: name for name, code in SPLIT_CODES.items()}


class _SourceRead(Protocol):
    """A reader's result: what it read, and what it quarantined."""

    quarantined: list[QuarantinedItem]


class _Manifest(Protocol):
    """A dataset.json model: it records the digest of each array file."""

    files: dict[str, str]

    def model_dump_json(self, *, indent: int | None = None) -> str: ...


_ReadT = TypeVar("_ReadT", bound=_SourceRead)


def write_quarantine(entries: Iterable[QuarantinedItem], dataset_dir: str, quarantine_uri: str | None) -> None:
    """quarantine.json in the dataset directory, and at `quarantine_uri` when given."""
    report = json.dumps([entry.as_dict() for entry in entries], indent=2)
    for uri in (f"{dataset_dir}/{QUARANTINE_FILE}", quarantine_uri):
        if uri:
            storage.write_text(uri, report)


def read_source(read: Callable[[], _ReadT], dataset_dir: str, quarantine_uri: str | None) -> _ReadT:
    """`read()`'s result; the quarantine report written before anything can fail, so nothing is lost.
    A SourceFormatError becomes an IngestError, its quarantined entries reported first."""
    try:
        result = read()
    except SourceFormatError as error:
        if error.quarantined:
            write_quarantine(error.quarantined, dataset_dir, quarantine_uri)
        raise IngestError(str(error)) from None
    write_quarantine(result.quarantined, dataset_dir, quarantine_uri)
    return result


def split_codes(source_splits: Sequence[str] | None, order: list[int], labels: np.ndarray, classes: list[str],
                split: SplitSpec, source: str, items: str) -> tuple[np.ndarray, bool]:  # fmt: skip
    """int8 split codes in stored order, and whether they came from the source's split column.

    `source_splits`: the source's split per item in read order (None: the source has none); `order`:
    read indices in stored order; `labels`: class indices in stored order; `items`: what is split, for
    messages ("sequences", "rows").
    """
    if source_splits is None or not split.use_source_test:
        return split_samples(labels, np.zeros(len(labels), dtype=bool), classes, split, source), False
    codes = np.array([SPLIT_CODES[source_splits[i]] for i in order], dtype=np.int8)
    train = codes == SPLIT_CODES["train"]
    if not train.any():
        raise IngestError(
            f"{source}: column 'split' gives no 'train' {items}; training needs them "
            "(add them, or set split.use_source_test: false to split by the fractions)"
        )
    if not (codes == SPLIT_CODES["val"]).any():
        # As IDX's t10k files: the source's test items stay the test split, and val is drawn from its
        # train items in the ratio split.train : split.val (stratified); a source of train items only
        # is divided by the fractions.
        drawn = split_samples(labels, ~train, classes, split, source)
        codes = np.where(train, drawn, codes).astype(np.int8)
    return codes, True


def content_version_id(keys: list[tuple[str, str, str]], settings: dict[str, Any], split: SplitSpec) -> str:
    """'ds-' + 16 hex of sha256 over sorted (content id, label, source split) and the settings, the
    split's included."""
    digest = hashlib.sha256()
    for key in sorted(keys):
        digest.update(("\t".join(key) + "\n").encode())
    split_settings = [split.train, split.val, split.test, split.seed, split.stratified, split.use_source_test]
    digest.update(json.dumps({**settings, "split": split_settings}, sort_keys=True).encode())
    return f"ds-{digest.hexdigest()[:16]}"


def index_csv(id_column: str, ids: list[str], labels: list[str], origins: list[str], order: list[int],
              codes: np.ndarray) -> str:  # fmt: skip
    """The stored items as CSV: index, `id_column`, label, split, origin; `order`: read indices in
    stored order, `codes` their split codes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", id_column, "label", "split", "origin"])
    for index, (i, code) in enumerate(zip(order, codes, strict=True)):
        writer.writerow([index, ids[i], labels[i], _SPLIT_NAMES[int(code)], origins[i]])
    return buffer.getvalue()


def save_arrays(
    dataset_dir: str, info: _Manifest, dtypes: Mapping[str, DTypeLike], arrays: Sequence[np.ndarray]
) -> None:
    """Each array as `dtypes`' file (in order) and type, then dataset.json with their digests last: a
    directory without dataset.json is an incomplete ingestion."""
    info.files = {
        file: storage.write_bytes(f"{dataset_dir}/{file}", npy_bytes(array.astype(dtype, copy=False)))
        for (file, dtype), array in zip(dtypes.items(), arrays, strict=True)
    }
    storage.write_text(f"{dataset_dir}/{INFO_FILE}", info.model_dump_json(indent=2))


def has_format(dataset_dir: str, format_name: str) -> bool:
    """Whether `dataset_dir` holds a finished dataset of this format."""
    uri = f"{dataset_dir}/{INFO_FILE}"
    return storage.exists(uri) and json.loads(storage.read_bytes(uri)).get("format") == format_name


def load_arrays(dataset_dir: str, files: Iterable[str], digests: Mapping[str, str]) -> list[np.ndarray]:
    """The arrays of these files, each checked against the digest dataset.json recorded for it."""
    return [load_npy(f"{dataset_dir}/{file}", digests.get(file)) for file in files]
