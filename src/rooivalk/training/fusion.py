"""Fusion over frozen sensor encoders: cached embeddings per sensor, then the cross-modal transformer.

`cache_sensor_features` fills, per sensor, an (N, D_s) matrix over all events from the feature cache
(one entry per sensor and split; rows of events without the sensor stay zero and are masked).
`train_fusion` trains `FusionTransformer` on those matrices with modality dropout; only the fusion
layers train, the sensor encoders are never touched again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rooivalk.data.dataset import SPLIT_CODES
from rooivalk.data.multisensor import MultiSensorDataset
from rooivalk.features.cache import cached_features, encoder_digest
from rooivalk.models.fusion import FusionTransformer
from rooivalk.plan import FusionSpec
from rooivalk.training.fitting import FitResult, fit_model
from rooivalk.training.loop import MetricsFn, ProgressFn
from rooivalk.training.sensors import SensorTrainResult
from rooivalk.training.tasks import FusionClassification


@dataclass
class FusionFeatures:
    features: dict[str, np.ndarray]  # sensor -> float32 (N, D_s) over all events
    present: np.ndarray  # bool (N, S)
    cache: dict[str, dict[str, Any]] = field(default_factory=dict)  # sensor -> hits, misses, forward passes, keys

    def _total(self, stat: str) -> int:
        return sum(int(stats[stat]) for stats in self.cache.values())

    @property
    def forward_passes(self) -> int:
        return self._total("forward_passes")

    @property
    def hits(self) -> int:
        return self._total("hits")


def cache_sensor_features(
    dataset: MultiSensorDataset, sensors: dict[str, SensorTrainResult], cache_root: str, batch_size: int = 256
) -> FusionFeatures:
    features: dict[str, np.ndarray] = {}
    cache: dict[str, dict[str, Any]] = {}
    for name, result in sensors.items():
        digest = encoder_digest(result.model, result.encoding.head_prefix)
        matrix: np.ndarray | None = None
        stats: dict[str, Any] = {"hits": 0, "misses": 0, "forward_passes": 0, "keys": {}, "rebuilt": []}
        present = dataset.present_of(name)
        for split, code in SPLIT_CODES.items():
            rows = present & (dataset.splits == code)
            entry = cached_features(
                cache_root,
                name,
                result.model,
                dataset.arrays[name][rows],
                {**result.encoding.preprocessing, "sensor": name},
                dataset.info.version_id,
                split,
                batch_size,
                result.encoding.embed,
                digest,
                result.encoding.preprocess,
            )
            stats["hits" if entry.hit else "misses"] += 1
            stats["forward_passes"] += entry.forward_passes
            stats["keys"][split] = entry.key
            if entry.rebuilt_reason:
                stats["rebuilt"].append(entry.rebuilt_reason)
            if not len(entry.features):
                continue  # no event of this split has the sensor
            if matrix is None:
                matrix = np.zeros((len(dataset.labels), entry.features.shape[1]), dtype=np.float32)
            matrix[rows] = entry.features
        if matrix is None:
            raise ValueError(f"sensor {name!r}: no event in any split has its sample")
        features[name] = matrix
        cache[name] = stats
    return FusionFeatures(features, dataset.present.copy(), cache)


def fusion_arrays(
    features: FusionFeatures, rows: np.ndarray, present: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    arrays = {name: matrix[rows] for name, matrix in features.features.items()}
    arrays["present"] = (features.present if present is None else present)[rows]
    return arrays


def embedding_dims(features: FusionFeatures) -> dict[str, int]:
    return {name: int(matrix.shape[1]) for name, matrix in features.features.items()}


def build_fusion(dims: dict[str, int], num_classes: int, spec: FusionSpec) -> FusionTransformer:
    """The fusion model over sensors with these embedding sizes (token order = `dims` order)."""
    return FusionTransformer(
        dims,
        num_classes,
        spec.width,
        spec.depth,
        spec.heads,
        spec.dropout,
        spec.modality_dropout.p,
        spec.modality_dropout.max_dropped,
    )


def fusion_task(
    features: FusionFeatures, dataset: MultiSensorDataset, train_rows: np.ndarray | None = None
) -> FusionClassification:
    """The fusion task over cached embeddings: training and validation events of the dataset's splits."""
    train_rows = dataset.split_mask("train") if train_rows is None else train_rows
    val_rows = dataset.split_mask("val")
    return FusionClassification(
        list(features.features),
        fusion_arrays(features, train_rows),
        dataset.labels[train_rows],
        fusion_arrays(features, val_rows),
        dataset.labels[val_rows],
        dataset.num_classes,
    )


def train_fusion(
    features: FusionFeatures,
    dataset: MultiSensorDataset,
    spec: FusionSpec,
    progress: ProgressFn | None = None,
    checkpoint_uri: str | None = None,
    log_metrics: MetricsFn | None = None,
) -> tuple[FusionTransformer, FitResult]:
    """Train the fusion transformer on the cached embeddings (only fusion layers train), resuming from
    `checkpoint_uri` (or fusion.training.checkpoint.uri) when it holds a checkpoint."""
    torch.manual_seed(spec.training.seed)
    model = build_fusion(embedding_dims(features), dataset.num_classes, spec)
    report = progress or (lambda _event: None)
    fit = fit_model(
        model,
        fusion_task(features, dataset),
        spec.training,
        pretrained=False,
        checkpoint_uri=spec.training.checkpoint.uri or checkpoint_uri,
        plan_digest=hashlib.sha256(spec.model_dump_json().encode()).hexdigest(),
        progress=lambda event: report({**event, "model": "fusion"}),
        log_metrics=log_metrics,
    )
    return model, fit


def _logits(
    model: FusionTransformer, features: FusionFeatures, rows: np.ndarray, present: np.ndarray | None
) -> torch.Tensor:
    arrays = fusion_arrays(features, rows, present)
    task = FusionClassification(
        model.sensors, arrays, np.zeros(0, dtype=np.int64), arrays, np.zeros(0, dtype=np.int64), 0
    )
    return task.predict(model, arrays, 512, torch.device("cpu"))


def predict_fusion(
    model: FusionTransformer, features: FusionFeatures, rows: np.ndarray, present: np.ndarray | None = None
) -> np.ndarray:
    """Class predictions for `rows`, with an optional presence mask (degraded mode)."""
    return np.asarray(_logits(model, features, rows, present).argmax(1).numpy())


def predict_fusion_probabilities(model: FusionTransformer, features: FusionFeatures, rows: np.ndarray) -> np.ndarray:
    """Softmax class probabilities (N, C) for `rows` with every present sensor (the reference profile's
    predictions and confidences)."""
    return np.asarray(_logits(model, features, rows, None).float().softmax(1).numpy())
