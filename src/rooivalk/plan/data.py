"""`data.format`: a built-in format or the name of an installed reader plugin.

The check reads entry-point metadata only (rooivalk.plugins.declared_entry_points, about 10 ms and
only for a name that is not built in): validating a plan imports no reader, and so no torch.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from rooivalk.plan.base import Strict
from rooivalk.plugins import READERS_GROUP, declared_entry_points

# The image readers of rooivalk.data.readers, and multisensor (rooivalk.data.ingest_multisensor).
BUILTIN_DATA_FORMATS = ("image_folder", "idx", "multisensor")


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
    """rooivalk.data.simulators.counter_drone settings: deterministic by seed, scales by count."""

    count: int = Field(4000, ge=5)
    seed: int = 0
    image_size: int = Field(32, ge=16, le=256)
    optical_field_px: int = Field(
        128,
        ge=8,
        le=1024,
        description="camera-frame pixels an optical chip shows: 128 (the default) is the whole frame "
        "scaled to image_size; image_size is a crop around the target at the camera's resolution",
    )


class DataSpec(Strict):
    source: str = Field(description="Local path or s3:// URI of the raw data.")
    format: DataFormat = Field(
        description="The reader: image_folder: one sub-folder per class with PNG/JPEG files; "
        "idx: MNIST-style IDX files (train-*/t10k-* images and labels, optionally .gz); "
        "multisensor: events.parquet linking each event's samples (rooivalk.data.ingest_multisensor); "
        "or the name of an installed reader plugin (entry-point group rooivalk.readers; `rooivalk families`)."
    )
    simulate: SimulationSpec | None = Field(
        None, description="Generate the source with the counter-drone simulator when it does not exist yet."
    )
    split: SplitSpec = SplitSpec()
    # Images of different sizes are resized to this square size at ingestion; uniform folders keep
    # their native size (the model input size is resized per batch during training).
    image_size: int = Field(64, ge=8, le=1024)
    channels: Literal["auto", 1, 3] = "auto"
    max_samples_per_class: int | None = Field(None, ge=1)
