"""Synthetic production data for drift tests: 6 numeric columns, a predicted class and a confidence,
optionally an embedding group; shifts are applied to named columns only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rooivalk.evaluation.profile import ProfileInfo, build_profile, save_profile

NUMERIC = [f"x{i}" for i in range(6)]
CLASSES = ["bird", "drone", "none"]
BASE_MIX = (0.5, 0.3, 0.2)


def make_data(
    rows: int,
    seed: int,
    mean_shift: dict[str, float] | None = None,
    scale: dict[str, float] | None = None,
    mix: tuple[float, float, float] = BASE_MIX,
    embedding_dim: int = 0,
    embedding_shift: float = 0.0,
) -> tuple[pd.DataFrame, ProfileInfo]:
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for name in NUMERIC:
        columns[name] = rng.normal((mean_shift or {}).get(name, 0.0), (scale or {}).get(name, 1.0), rows)
    columns["prediction"] = rng.choice(CLASSES, rows, p=mix).astype(object)
    columns["confidence"] = rng.beta(8, 2, rows)
    embeddings = {}
    if embedding_dim:
        matrix = rng.normal(size=(rows, embedding_dim))
        matrix[:, :4] += embedding_shift
        embeddings["optical"] = matrix
    return build_profile(columns, embeddings, dataset_version="ds-test", model="synthetic")


def save_reference(folder: Path, rows: int = 2000, seed: int = 0, embedding_dim: int = 0) -> str:
    frame, info = make_data(rows, seed, embedding_dim=embedding_dim)
    save_profile(str(folder), frame, info)
    return str(folder)
