"""Deployment bundles: one folder (local path or s3:// prefix) per exported model.

```
model.onnx          the shipped ONNX variant
model.engine        optional TensorRT engine, with its model.engine.json sidecar
reliability.png     optional reliability diagram
bundle.json         BundleInfo, written last
```
bundle.json is the completion marker: it is deleted before a bundle is rewritten and written after
every other file, so a reader that finds it finds a complete bundle, and the sha256 it records for
each file lets a reader refuse a file that was changed afterwards.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rooivalk import storage

MODEL_FILE = "model.onnx"
ENGINE_FILE = "model.engine"
ENGINE_META_FILE = "model.engine.json"
RELIABILITY_FILE = "reliability.png"
INFO_FILE = "bundle.json"
PRESENT_INPUT = "present"  # the fusion model's bool (B, n_sensors) presence mask

Precision = Literal["fp32", "fp16", "int8_static", "int8_dynamic"]

# The keys each preprocessing kind needs; the functions that apply them live in
# rooivalk.export.predictor.PREPROCESSORS (a test keeps the two in step).
PREPROCESSING_KEYS: dict[str, tuple[str, ...]] = {
    "image": ("input_size", "mean", "std", "in_chans"),
    "iq": (),
    "float32": (),
    "embeddings": ("sensors", "dims"),
    "sequence": ("features", "length", "mean", "std"),  # an rnn: inputs "sequences" and "lengths"
    "table": ("table",),  # an mlp: the table encoding (rooivalk.data.table_dataset.TableDatasetInfo)
    # A detector: letterbox size and fill, post-process settings (with level_sizes), the kept score.
    "detection": ("input_height", "input_width", "fill", "postprocess", "operating_threshold"),
}
SEQUENCE_INPUTS = ["sequences", "lengths"]
_SHA256 = re.compile(r"[0-9a-f]{64}")


def bundle_format(preprocessing: dict[str, Any]) -> Literal[1, 2]:
    """The oldest bundle format that runs `preprocessing` as written: 2 for a detector ensemble whose members
    post-process with their own settings (postprocess.ensemble.member_postprocess: a reader of format 1
    would not see them and run every member with the top-level ones), else 1."""
    ensemble = (preprocessing.get("postprocess") or {}).get("ensemble") or {}
    return 2 if ensemble.get("member_postprocess") is not None else 1


class BundleError(ValueError):
    """A bundle that cannot be written, read or run; the message names the bundle URI and the field."""


class TensorSpec(BaseModel):
    """One ONNX input or output as ONNX Runtime reports it (dynamic dimensions are names or None)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int | str | None]
    type: str  # e.g. "tensor(float)", "tensor(bool)"


class BundleInfo(BaseModel):
    """bundle.json: what a Predictor needs to turn stored samples into labels with this model."""

    model_config = ConfigDict(extra="forbid")

    format_version: Literal[1, 2] = 1  # bundle_format: what the preprocessing needs of its reader
    name: str = Field(min_length=1)
    precision: Precision
    labels: list[str] = Field(min_length=1)
    preprocessing: dict[str, Any]
    temperature: float = Field(default=1.0, gt=0)
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    logits_output: str = "logits"
    embedding_output: str | None = None
    files: dict[str, str] = Field(default_factory=dict)  # file name -> sha256, filled by write_bundle
    metrics: dict[str, float] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("preprocessing")
    @classmethod
    def _known_kind(cls, value: dict[str, Any]) -> dict[str, Any]:
        kind = value.get("kind")
        if kind not in PREPROCESSING_KEYS:
            raise ValueError(f"kind {kind!r} is not one of {sorted(PREPROCESSING_KEYS)}")
        missing = [key for key in PREPROCESSING_KEYS[kind] if key not in value]
        if missing:
            raise ValueError(f"kind {kind!r} needs {missing}")
        return value

    @field_validator("files")
    @classmethod
    def _digests(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(name for name, digest in value.items() if not _SHA256.fullmatch(digest))
        if bad:
            raise ValueError(f"not a sha256 hex digest for {bad}")
        return value

    @model_validator(mode="after")
    def _format(self) -> BundleInfo:
        needed = bundle_format(self.preprocessing)
        if self.format_version < needed:
            raise ValueError(f"format_version: {self.format_version}, but its preprocessing needs format {needed}")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> BundleInfo:
        outputs = {spec.name: spec for spec in self.outputs}
        for field in ("logits_output", "embedding_output"):
            name = getattr(self, field)
            if name is not None and name not in outputs:
                raise ValueError(f"{field}: {name!r} is not an output of the model ({sorted(outputs)})")
        classes = outputs[self.logits_output].shape[-1:]
        # A static class dimension must match the labels (0 or a name: unknown, not checked).
        if classes and isinstance(classes[0], int) and classes[0] > 0 and classes[0] != len(self.labels):
            raise ValueError(f"labels: {len(self.labels)} names for {classes[0]} logits")
        inputs = [spec.name for spec in self.inputs]
        if self.preprocessing["kind"] == "sequence":
            if inputs != SEQUENCE_INPUTS:
                raise ValueError(f"inputs: kind 'sequence' feeds {SEQUENCE_INPUTS}, the model has {inputs}")
            return self
        if self.preprocessing["kind"] != "embeddings":
            if len(inputs) != 1:
                raise ValueError(f"inputs: kind {self.preprocessing['kind']!r} feeds one input, the model has {inputs}")
            return self
        sensors, dims = list(self.preprocessing["sensors"]), dict(self.preprocessing["dims"])
        if sorted(inputs) != sorted([*sensors, PRESENT_INPUT]):
            raise ValueError(f"inputs: an embeddings model takes {[*sensors, PRESENT_INPUT]}, this one {inputs}")
        if sorted(dims) != sorted(sensors):
            raise ValueError(f"preprocessing.dims: keys {sorted(dims)} are not the sensors {sorted(sensors)}")
        return self


def join(uri: str, name: str) -> str:
    return f"{str(uri).rstrip('/')}/{name}"


def io_specs(onnx_path: str | Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The (inputs, outputs) of an ONNX file as ONNX Runtime sees them: what BundleInfo records."""
    from rooivalk.export.benchmark import ort_session

    session = ort_session(onnx_path, threads=1)

    def specs(args: list[Any]) -> list[TensorSpec]:
        return [TensorSpec(name=arg.name, shape=list(arg.shape), type=arg.type) for arg in args]

    return specs(session.get_inputs()), specs(session.get_outputs())


def bundle_metadata(plan_digest: str | None = None, dataset_version: str | None = None) -> dict[str, Any]:
    """bundle.json's metadata: lineage, the ONNX opset and the versions that exported it, the time."""
    from rooivalk.export.onnx_export import OPSET

    versions = {}
    for package in ("torch", "onnx", "onnxruntime"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "absent"
    return {
        "plan_digest": plan_digest,
        "dataset_version": dataset_version,
        "opset": OPSET,
        "versions": versions,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _check_extra_files(uri: str, extra_files: dict[str, Path]) -> None:
    for name, path in extra_files.items():
        if "/" in name or name.startswith(".") or name in (MODEL_FILE, INFO_FILE):
            raise BundleError(
                f"{uri}: extra_files: {name!r} is not a plain file name other than {MODEL_FILE}/{INFO_FILE}"
            )
        if not Path(path).is_file():
            raise BundleError(f"{uri}: extra_files.{name}: {path} is not a file")
    # An engine without its sidecar cannot be checked against the GPU/TensorRT it was built for.
    if ENGINE_FILE in extra_files and ENGINE_META_FILE not in extra_files:
        raise BundleError(f"{uri}: extra_files: {ENGINE_FILE} needs its {ENGINE_META_FILE} sidecar")


def write_bundle(
    uri: str, info: BundleInfo, onnx_path: Path, extra_files: dict[str, Path] | None = None
) -> dict[str, str]:
    """Copy the ONNX file (and extra files) into the bundle at `uri`, record their sha256 in
    info.files, write bundle.json last; return {file name: URI or path}."""
    extra_files = dict(extra_files or {})
    _check_extra_files(uri, extra_files)
    # Names only: a Predictor feeds and fetches by name, and shape/type spellings differ between
    # ONNX Runtime ("tensor(float)", None) and the ONNX graph ("float", 0) that a caller may record.
    inputs, outputs = io_specs(onnx_path)
    actual = ([spec.name for spec in inputs], [spec.name for spec in outputs])
    if actual != ([spec.name for spec in info.inputs], [spec.name for spec in info.outputs]):
        raise BundleError(
            f"{uri}: inputs/outputs of bundle info {info.name!r} do not match {onnx_path}, which has "
            f"inputs {actual[0]} and outputs {actual[1]}; fill them with rooivalk.export.bundle.io_specs"
        )
    storage.delete(join(uri, INFO_FILE))  # a rewrite must not look complete until it is
    written: dict[str, str] = {}
    files: dict[str, str] = {}
    for name, path in {MODEL_FILE: Path(onnx_path), **extra_files}.items():
        written[name] = join(uri, name)
        files[name] = storage.write_bytes(written[name], Path(path).read_bytes())
    final = info.model_copy(update={"files": files})
    written[INFO_FILE] = join(uri, INFO_FILE)
    storage.write_text(written[INFO_FILE], final.model_dump_json(indent=2) + "\n")
    return written


def _describe(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in item['loc']) or '<root>'}: {item['msg']}" for item in error.errors())


def read_bundle_info(uri: str) -> BundleInfo:
    """The BundleInfo of the bundle at `uri`; BundleError naming the URI when it is missing or invalid."""
    location = join(uri, INFO_FILE)
    try:
        text = storage.read_bytes(location)
    except storage.StorageError as error:
        raise BundleError(f"{location}: no readable bundle.json, so no complete bundle at {uri} ({error})") from None
    try:
        info = BundleInfo.model_validate(json.loads(text))
    except json.JSONDecodeError as error:
        raise BundleError(f"{location}: not JSON ({error})") from None
    except ValidationError as error:
        raise BundleError(f"{location}: invalid bundle info: {_describe(error)}") from None
    if MODEL_FILE not in info.files:
        raise BundleError(f"{location}: files: no sha256 recorded for {MODEL_FILE}")
    return info
