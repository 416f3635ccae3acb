"""`data.format`: a built-in format or the name of an installed reader plugin.

The check reads entry-point metadata only (rooivalk.plugins.declared_entry_points, about 10 ms and
only for a name that is not built in): validating a plan imports no reader, and so no torch.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from rooivalk.plan.base import Strict
from rooivalk.plugins import READERS_GROUP, declared_entry_points

# The image readers of rooivalk.data.readers, multisensor (rooivalk.data.ingest_multisensor), and the
# array formats: sequences (rooivalk.data.sequence_dataset) and table (rooivalk.data.table_dataset).
IMAGE_FORMATS = ("image_folder", "idx")
ARRAY_FORMATS = ("sequences", "table")
# Object detection: images with boxes (rooivalk.data.detection_dataset).
DETECTION_FORMATS = ("yolo", "coco")
BUILTIN_DATA_FORMATS = (*IMAGE_FORMATS, "multisensor", *ARRAY_FORMATS, *DETECTION_FORMATS)
# What each simulator writes: the format a plan must read it with.
SIMULATOR_FORMATS = {
    "counter_drone": "multisensor",
    "sign_language": "sequences",
    "attribution": "table",
    "drone_frames": "yolo",
    "shapes": "yolo",
}


def known_data_formats() -> list[str]:
    """Built-in formats, then the declared reader plugins' names."""
    plugins = [entry.name for entry in declared_entry_points(READERS_GROUP)]
    return [*BUILTIN_DATA_FORMATS, *(name for name in plugins if name not in BUILTIN_DATA_FORMATS)]


def check_data_format(value: str) -> str:
    if value in BUILTIN_DATA_FORMATS:
        return value
    known = known_data_formats()
    if value in known:
        return value
    raise ValueError(
        f"unknown data format {value!r}; known formats: {', '.join(known)} (a reader plugin adds one through "
        f"the {READERS_GROUP!r} entry-point group; `rooivalk families` lists them)"
    )


DataFormat = Annotated[str, AfterValidator(check_data_format)]


class SplitSpec(Strict):
    """How samples are divided. Fractions are of the whole dataset; the split is stratified by label."""

    train: float = Field(0.70, gt=0, lt=1)
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, ge=0, lt=1)
    seed: int = 0
    stratified: bool = True
    # Formats that ship an official test set (idx: Fashion-MNIST's t10k files) use it as the test
    # split; train and val then divide the rest in the ratio train:val.
    use_source_test: bool = True

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitSpec:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions train+val+test must sum to 1, got {total:.4f}")
        return self


class SimulationSpec(Strict):
    """A simulator that writes `data.source` when it does not exist yet: deterministic by seed, scales by
    count. `kind` picks it; the keys under a kind's name apply to that kind only (rooivalk validate
    refuses the others)."""

    kind: Literal["counter_drone", "sign_language", "attribution", "drone_frames", "shapes"] = Field(
        "counter_drone",
        description="counter_drone: multi-sensor events (data.format multisensor); sign_language: hand-landmark "
        "sequences (sequences); attribution: threat-attribution features (table); drone_frames: camera frames "
        "with drone, bird and aircraft boxes (yolo); shapes: circles, squares and triangles with boxes (yolo)",
    )
    count: int = Field(4000, ge=5)
    seed: int = 0
    image_size: int = Field(32, ge=16, le=256, description="counter_drone")
    optical_field_px: int = Field(
        128,
        ge=8,
        le=1024,
        description="counter_drone: camera-frame pixels an optical chip shows: 128 (the default) is the whole "
        "frame scaled to image_size; image_size is a crop around the target at the camera's resolution",
    )
    num_classes: int = Field(26, ge=2, le=26, description="sign_language: words (classes) to simulate")
    min_length: int = Field(20, ge=2, description="sign_language: shortest sequence, frames")
    max_length: int = Field(40, ge=2, description="sign_language: longest sequence, frames")
    frame_width: int = Field(160, ge=32, le=2048, description="drone_frames, shapes: image width, pixels")
    frame_height: int = Field(96, ge=32, le=2048, description="drone_frames, shapes: image height, pixels")
    max_objects: int = Field(3, ge=1, le=20, description="drone_frames, shapes: most boxes in one image")

    @model_validator(mode="after")
    def _lengths(self) -> SimulationSpec:
        if self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} is above max_length {self.max_length}")
        return self


class SequenceSpec(Strict):
    """How `data.format: sequences` reads and stores sequences."""

    length: int | None = Field(
        None,
        ge=1,
        description="frames per stored sequence: longer ones keep their first `length` frames, shorter ones are "
        "padded with copies of their last frame; null: the longest sequence's length",
    )
    step: str | None = Field(
        None,
        description="column that orders a sequence's rows (e.g. frame or timestamp); null: a column named "
        "`step` where a file has one, else file order",
    )


class ExtraSourceSpec(Strict):
    """One more detection source merged into the dataset with data.source (yolo, coco)."""

    name: str = Field(min_length=1, description="provenance name of its images (dataset.json counts them)")
    source: str = Field(description="local path or s3:// URI")
    format: Literal["yolo", "coco"]


class DataSpec(Strict):
    source: str = Field(description="Local path or s3:// URI of the raw data.")
    format: DataFormat = Field(
        description="The reader: image_folder: one sub-folder per class with PNG/JPEG files; "
        "idx: MNIST-style IDX files (train-*/t10k-* images and labels, optionally .gz); "
        "multisensor: events.parquet linking each event's samples (rooivalk.data.ingest_multisensor); "
        "sequences: CSV/Parquet in long form (sequence_id, label, optional split and step, feature columns) or NPZ "
        "(X, lengths, y); table: CSV/Parquet, one row per sample with a label column and numeric or categorical "
        "features; yolo: a folder with images/ and labels/ (optionally train/val/test sub-folders) and data.yaml "
        "names; coco: a COCO instances JSON file, images beside it; or the name of an installed reader plugin "
        "(entry-point group rooivalk.readers; `rooivalk families`)."
    )
    simulate: SimulationSpec | None = Field(
        None, description="Generate the source with a simulator (simulate.kind) when it does not exist yet."
    )
    split: SplitSpec = SplitSpec()
    # Images of different sizes are resized to this square size at ingestion; uniform folders keep
    # their native size (the model input size is resized per batch during training).
    image_size: int = Field(64, ge=8, le=1024)
    channels: Literal["auto", 1, 3] = "auto"
    max_samples_per_class: int | None = Field(None, ge=1)
    label: str = Field("label", min_length=1, description="sequences, table: the label column")
    features: list[str] | None = Field(
        None,
        min_length=1,
        description="sequences, table: the feature columns, in this order; null: every other column "
        "(sequences: numeric ones)",
    )
    categorical: list[str] | None = Field(
        None, description="table: columns to treat as categorical; null: a column's kind is read from its cells"
    )
    sequence: SequenceSpec = SequenceSpec()
    extra_sources: list[ExtraSourceSpec] = Field(
        [],
        description="yolo, coco: more sources merged with data.source into one dataset version, each image "
        "keeping its source's name; the same image content in two sources is kept once",
    )
    class_map: dict[str, str | None] = Field(
        {},
        description="yolo, coco: rename classes across sources ({Fish: fish}; two names may map to one); null "
        "drops a class's boxes (background). A name no source declares is an error",
    )
