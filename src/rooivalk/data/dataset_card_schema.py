"""The dataset card's schema (rooivalk.data.dataset_card builds it): a stable JSON record of one dataset
version that tools read (`rooivalk dataset card --json`, traceability from runs to data). A field is
added with a default; a field renamed or removed bumps CARD_SCHEMA_VERSION."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

CARD_SCHEMA_VERSION = 1


class SplitCounts(BaseModel):
    total: int
    per_class: dict[str, int]  # detection images: images holding the class (an image may hold several)


class Counts(BaseModel):
    unit: str  # what is counted: images, sequences, rows, events, boxes
    total: int
    per_split: dict[str, SplitCounts]  # train, val, test
    per_class: dict[str, int]  # over all splits


class SourceCard(BaseModel):
    name: str  # provenance name (detection: the images.csv `source` column), else the URI
    uri: str
    reader: str | None  # the plan's data.format; None when the dataset predates data_spec.json


class Sources(BaseModel):
    sources: list[SourceCard]  # data.source first, then data.extra_sources
    simulated: dict[str, Any] | None  # the plan's data.simulate section (simulator kind and settings)
    class_map: dict[str, str | None]  # detection merges: source class -> dataset class (None drops it)
    images_per_source: dict[str, int]  # detection: provenance name -> images; else empty


class QuarantineSummary(BaseModel):
    count: int
    file: str  # the full report, relative to the dataset folder (quarantine.json): every entry's origin and reason
    by_reason: dict[str, int]  # most frequent first


class Manifest(BaseModel):
    info_file: str  # dataset.json (this and the other file names: relative to the dataset folder)
    info_sha256: str  # its bytes' digest: pins every figure of the dataset
    files: dict[str, str]  # file -> sha256 as dataset.json records it (the arrays it checks on load)
    digest: str  # sha256 of `files` as `sha256sum` lines ("<sha256>  <file>\n", sorted by file)
    index_file: str  # the per-item table: one row per item with its id, label, split and origin
    index_sha256: str
    split_digests: dict[str, str]  # split -> sha256 of the index table's rows of that split, in stored order


class Creation(BaseModel):
    by: str
    at: str  # UTC ISO 8601
    rooivalk_version: str
    git_commit: str  # as the lineage tags record it ("unknown" outside a git checkout)


class DatasetCard(BaseModel):
    schema_version: int = CARD_SCHEMA_VERSION
    dataset_version: str
    kind: str  # image, sequences, table, detection, multisensor
    format: str  # dataset.json's format (multisensor: "multisensor")
    classes: list[str]
    split_seed: int
    sources: Sources
    counts: Counts  # items (KINDS) per class and split
    boxes: Counts | None = None  # detection: boxes per class and split
    negatives: dict[str, int] | None = None  # detection: split -> images without a box
    missing_modalities: dict[str, dict[str, int]] | None = None  # multisensor: sensor -> split -> events without it
    quarantine: QuarantineSummary
    manifest: Manifest
    created: Creation
