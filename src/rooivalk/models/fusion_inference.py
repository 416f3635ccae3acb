"""The fusion model's inputs and inference: per-sensor embeddings over all events with a presence
mask (FusionFeatures, filled from the feature cache by
rooivalk.features.fusion_features), the model built from
a plan's fusion spec, and class predictions with an optional presence mask (degraded mode)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from rooivalk.models.fusion_transformer import FusionTransformer
from rooivalk.models.inference import batched_logits
from rooivalk.plan import FusionSpec


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


def _logits(
    model: FusionTransformer, features: FusionFeatures, rows: np.ndarray, present: np.ndarray | None
) -> torch.Tensor:
    def forward(network: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return network({name: batch[name] for name in model.sensors}, batch["present"])  # type: ignore[no-any-return]

    return batched_logits(model, fusion_arrays(features, rows, present), 512, forward, 0)


def predict_fusion(
    model: FusionTransformer, features: FusionFeatures, rows: np.ndarray, present: np.ndarray | None = None
) -> np.ndarray:
    """Class predictions for `rows`, with an optional presence mask (degraded mode)."""
    return np.asarray(_logits(model, features, rows, present).argmax(1).numpy())


def predict_fusion_probabilities(model: FusionTransformer, features: FusionFeatures, rows: np.ndarray) -> np.ndarray:
    """Softmax class probabilities (N, C) for `rows` with every present sensor (the reference profile's
    predictions and confidences)."""
    return np.asarray(_logits(model, features, rows, None).float().softmax(1).numpy())
