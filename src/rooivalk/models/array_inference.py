"""Inputs and logits of rnn and mlp models on array datasets, the way training fed them.

Sequences: raw frames (N, T, F) standardized with the train split's statistics, with their lengths
(N,); tables: the dataset's model inputs (standardized numeric features, one-hot categories).
Evaluation and export both go through `model_arrays`, so they score exactly what training saw.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rooivalk.data.sequence_dataset import SequenceDataset
from rooivalk.data.table_dataset import TableDataset, TableDatasetInfo, encode_categories, model_inputs
from rooivalk.models.array_artifact import ArrayModelInfo
from rooivalk.models.inference import Arrays, Batch, batched_logits

SEQUENCES = "sequences"  # the rnn's inputs, also the names of its ONNX inputs (rooivalk.export.rnn_onnx)
LENGTHS = "lengths"
INPUTS = "inputs"  # the mlp's input


def standardize(info: ArrayModelInfo, sequences: np.ndarray) -> np.ndarray:
    """(N, T, F) raw frames -> float32 (N, T, F) standardized as in training."""
    mean, std = np.asarray(info.mean, np.float32), np.asarray(info.std, np.float32)
    return ((np.asarray(sequences, np.float32) - mean) / std).astype(np.float32)


def model_arrays(
    info: ArrayModelInfo, dataset: SequenceDataset | TableDataset, split: str
) -> tuple[Arrays, np.ndarray]:
    """(the model's named input arrays, labels (n,)) of one split, the dataset's columns taken by name in
    the model's order and its categories re-encoded by name (a champion re-scored on a newer dataset
    version meets categories its own training split never had: they are unseen). Raises ValueError
    when the dataset lacks a feature the model takes."""
    if isinstance(dataset, SequenceDataset):
        sequences, lengths, labels = dataset.subset(split)
        columns = _columns(info.input_names, list(dataset.info.feature_names), dataset.info.version_id)
        return {SEQUENCES: standardize(info, sequences[:, :, columns]), LENGTHS: lengths}, labels
    numeric, codes, labels = dataset.subset(split)
    own = table_info(info)
    numeric = numeric[:, _columns(own.numeric_features, dataset.info.numeric_features, dataset.info.version_id)]
    named = {
        feature.name: np.asarray(feature.categories, dtype=object)[codes[:, f]]
        for f, feature in enumerate(dataset.info.categorical_features)
    }
    wanted = [feature.name for feature in own.categorical_features]
    _columns(wanted, list(named), dataset.info.version_id)
    if wanted:  # object (n, F_cat) category names -> the model's codes
        cells = np.stack([named[name] for name in wanted], axis=1)
        codes, _ = encode_categories(own.categorical_features, cells)
    else:
        codes = np.zeros((len(labels), 0), dtype=np.int64)
    return {INPUTS: model_inputs(own, numeric, codes)}, labels


def _columns(wanted: list[str], present: list[str], version: str) -> np.ndarray:
    """Indices (int64) of `wanted` among `present`; ValueError naming the missing ones."""
    missing = [name for name in wanted if name not in present]
    if missing:
        raise ValueError(f"dataset {version} lacks the model's feature(s) {missing}")
    return np.asarray([present.index(name) for name in wanted], dtype=np.int64)


def table_info(info: ArrayModelInfo) -> TableDatasetInfo:
    if info.table is None:
        raise ValueError(f"model {info.spec.architecture} is a {info.kind} model: it has no table encoding")
    return TableDatasetInfo.model_validate(info.table)


def _forward(model: nn.Module, batch: Batch) -> torch.Tensor:
    if SEQUENCES in batch:
        return model(batch[SEQUENCES], batch[LENGTHS])  # type: ignore[no-any-return]
    return model(batch[INPUTS])  # type: ignore[no-any-return]


def array_logits(model: nn.Module, arrays: Arrays, num_classes: int, batch_size: int = 256) -> np.ndarray:
    """Logits (N, K) float32 of the model over every row of `arrays`, in eval mode."""
    return batched_logits(model, arrays, batch_size, _forward, num_classes).numpy()
