"""The reference profile: what production data is compared with.

The training pipeline stores, on the validation split and versioned with the dataset, one row per
sample: simple per-sample signal statistics per sensor (`<sensor>_mean`, `_std`, `_peak`,
`_present`), the model's `prediction` (class name) and `confidence` (top softmax probability), and
the sensor embeddings from the feature cache (`<sensor>_emb_000` ...; listed under `embeddings`).
Layout, written through rooivalk.storage (local folder or s3:// prefix), info file last:
    profile.parquet   the rows (pyarrow)
    profile.json      ProfileInfo: dataset version, model, column schema, embedding groups, sha256
Production batches are checked against the schema (`check_frame`); a problem names the column.
"""

from __future__ import annotations

import io
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from rooivalk import storage

PROFILE_DATA = "profile.parquet"
PROFILE_INFO = "profile.json"
PREDICTION, CONFIDENCE = "prediction", "confidence"


class ColumnSchema(BaseModel):
    name: str
    kind: Literal["numerical", "categorical"]


class ProfileInfo(BaseModel):
    dataset_version: str
    model: str
    split: str
    rows: int
    columns: list[ColumnSchema]  # the tabular columns production batches carry
    embeddings: dict[str, list[str]] = {}  # group (sensor) -> its embedding columns
    data_sha256: str = ""

    def kinds(self) -> dict[str, str]:
        return {column.name: column.kind for column in self.columns}

    def embedding_columns(self) -> list[str]:
        return [name for names in self.embeddings.values() for name in names]


class BadBatch(ValueError):
    """A production batch that does not match the reference schema; the message names the problem."""


def signal_statistics(name: str, samples: np.ndarray, present: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-sample mean, standard deviation and peak |x| of a sensor's raw samples (N, ...), complex
    samples (RF I/Q) over their real and imaginary parts; absent samples (present False) get zeros
    and `<name>_present` says which (a category, "0"/"1")."""
    if np.iscomplexobj(samples):
        samples = np.stack([samples.real, samples.imag], axis=-1)
    flat = samples.reshape(len(samples), -1).astype(np.float64)
    stats = {
        f"{name}_mean": flat.mean(axis=1),
        f"{name}_std": flat.std(axis=1),
        f"{name}_peak": np.abs(flat).max(axis=1) if flat.shape[1] else np.zeros(len(flat)),
    }
    if present is not None:
        for values in stats.values():
            values[~present] = 0.0
        stats[f"{name}_present"] = np.where(present, "1", "0").astype(object)
    return stats


def prediction_columns(probabilities: np.ndarray, classes: list[str]) -> dict[str, np.ndarray]:
    """`prediction` (class name) and `confidence` (top probability) from softmax outputs (N, C)."""
    top = probabilities.argmax(axis=1)
    return {PREDICTION: np.asarray(classes, dtype=object)[top], CONFIDENCE: probabilities.max(axis=1)}


def build_profile(
    columns: dict[str, np.ndarray],
    embeddings: dict[str, np.ndarray],
    dataset_version: str,
    model: str,
    split: str = "val",
) -> tuple[pd.DataFrame, ProfileInfo]:
    """A profile frame from tabular columns (N,) and embedding matrices (N, D) per group; object
    columns are categorical, the rest numerical."""
    frame = pd.DataFrame({name: values for name, values in columns.items()})
    schema = [
        ColumnSchema(name=name, kind="categorical" if frame[name].dtype == object else "numerical") for name in frame
    ]
    groups: dict[str, list[str]] = {}
    blocks = [frame]
    for group, matrix in embeddings.items():
        names = [f"{group}_emb_{i:03d}" for i in range(matrix.shape[1])]
        groups[group] = names
        blocks.append(pd.DataFrame(matrix.astype(np.float32), columns=names))
    frame = pd.concat(blocks, axis=1)
    info = ProfileInfo(
        dataset_version=dataset_version, model=model, split=split, rows=len(frame), columns=schema, embeddings=groups
    )
    return frame, info


def save_profile(uri: str, frame: pd.DataFrame, info: ProfileInfo) -> ProfileInfo:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    info = info.model_copy(update={"data_sha256": storage.write_bytes(f"{uri}/{PROFILE_DATA}", buffer.getvalue())})
    storage.write_text(f"{uri}/{PROFILE_INFO}", info.model_dump_json(indent=2))
    return info


def load_profile(uri: str) -> tuple[pd.DataFrame, ProfileInfo]:
    """The profile at `uri` (its data checked against the sha256 in profile.json)."""
    info_uri = f"{uri}/{PROFILE_INFO}"
    if not storage.exists(info_uri):
        raise storage.StorageError(f"{uri}: not a reference profile (no {PROFILE_INFO})")
    info = ProfileInfo.model_validate_json(storage.read_bytes(info_uri))
    data = storage.read_bytes(f"{uri}/{PROFILE_DATA}", sha256=info.data_sha256 or None)
    return pd.read_parquet(io.BytesIO(data)), info


def load_frame(uri: str) -> pd.DataFrame:
    """Production data: a profile folder, or a .parquet, .csv or .jsonl file."""
    if storage.exists(f"{uri}/{PROFILE_INFO}"):
        return load_profile(uri)[0]
    data = io.BytesIO(storage.read_bytes(uri))
    if uri.endswith(".parquet"):
        return pd.read_parquet(data)
    if uri.endswith(".csv"):
        return pd.read_csv(data)
    if uri.endswith(".jsonl"):
        return pd.read_json(data, lines=True)
    raise ValueError(f"{uri}: unknown data format (use a profile folder, .parquet, .csv or .jsonl)")


def check_frame(info: ProfileInfo, frame: pd.DataFrame, where: str, embeddings: bool = False) -> pd.DataFrame:
    """`frame` with the profile's tabular columns (and embedding columns if asked), in order, with the
    profile's types; raises BadBatch naming missing or extra columns, wrong types and NaN/inf."""
    expected = [column.name for column in info.columns]
    if embeddings:
        expected += info.embedding_columns()
    missing = [name for name in expected if name not in frame.columns]
    if missing:
        raise BadBatch(f"{where}: missing column(s) {missing}")
    known = set(expected) | set(info.embedding_columns())
    extra = [name for name in frame.columns if name not in known]
    if extra:
        raise BadBatch(f"{where}: unexpected column(s) {extra} (the reference has {expected[:20]})")
    out: dict[str, Any] = {}
    kinds = info.kinds()
    for name in expected:
        values = frame[name]
        if kinds.get(name, "numerical") == "categorical":
            if values.isna().any():
                raise BadBatch(f"{where}: column {name!r} has missing values")
            out[name] = values.astype(str).astype(object)
            continue
        if values.dtype == object or values.dtype == bool or not np.issubdtype(values.dtype, np.number):
            example = values.iloc[0] if len(values) else None
            raise BadBatch(f"{where}: column {name!r} must be numbers, got {values.dtype} (e.g. {example!r})")
        array = values.to_numpy(dtype=np.float64)
        if not np.isfinite(array).all():
            raise BadBatch(f"{where}: column {name!r} has NaN or infinite values")
        out[name] = array
    return pd.DataFrame(out)
