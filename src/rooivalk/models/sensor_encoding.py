"""How each sensor's stored samples become model inputs, and how its encoder produces embeddings.

Preprocessing lives here, once, for training, caching and evaluation alike; its config is part of
the feature cache key (change the optical input size and the cache recomputes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rooivalk.data.dataset import SPLIT_CODES
from rooivalk.data.multisensor_dataset import MultiSensorDataset
from rooivalk.data.transforms import to_model_input
from rooivalk.models.rf_cnn_transformer import iq_to_input
from rooivalk.models.timm_family import input_channels, normalization
from rooivalk.plan import ModelSpec


def forward_features(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The encoder's embedding of a batch: the model's own `forward_features`."""
    return model.forward_features(batch)  # type: ignore[operator,no-any-return]


@dataclass(frozen=True)
class SensorEncoding:
    """A sensor model's input pipeline and its embedding function."""

    preprocess: Callable[[np.ndarray], np.ndarray]  # stored samples (N, ...) -> float32 model inputs
    preprocessing: dict[str, Any]  # everything `preprocess` depends on (a cache-key input)
    head_prefix: str = "head."  # state-dict prefix of the classifier, left out of the encoder digest
    embed: Callable[[nn.Module, torch.Tensor], torch.Tensor] = forward_features


def _timm_embed(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    # timm: pooled pre-logits features (N, num_features), exactly what the classifier sees.
    return model.forward_head(model.forward_features(batch), pre_logits=True)  # type: ignore[operator,no-any-return]


def image_encoding(model: nn.Module, spec: ModelSpec) -> SensorEncoding:
    mean, std = normalization(model)
    in_chans = input_channels(model)

    def preprocess(images: np.ndarray) -> np.ndarray:
        images = images[..., None] if images.ndim == 3 else images
        return to_model_input(images, spec.input_size, mean, std, in_chans).numpy()

    config = {"kind": "image", "input_size": spec.input_size, "mean": mean, "std": std, "in_chans": in_chans}
    return SensorEncoding(preprocess, config, head_prefix="classifier.", embed=_timm_embed)


def _as_float32(samples: np.ndarray) -> np.ndarray:
    return np.asarray(samples, dtype=np.float32)


def sensor_encoding(model: nn.Module, spec: ModelSpec) -> SensorEncoding:
    """The encoding of a model family: images for timm, IQ for RF, tracks for radar, waveforms for audio."""
    if spec.family == "timm":
        return image_encoding(model, spec)
    if spec.family == "rf_cnn_transformer":
        return SensorEncoding(iq_to_input, {"kind": "iq", "scale": "median-noise-floor"})
    if spec.family in ("radar_sequence", "acoustic_crepe"):
        return SensorEncoding(_as_float32, {"kind": "float32"})
    raise ValueError(f"model.family {spec.family!r} has no sensor encoding; known: timm, rf_cnn_transformer, "
                     "radar_sequence, acoustic_crepe")  # fmt: skip


def sensor_split(
    dataset: MultiSensorDataset, name: str, split: str, encoding: SensorEncoding
) -> tuple[np.ndarray, np.ndarray]:
    """(model inputs, labels) of the split's events that have this sensor's sample."""
    rows = dataset.present_of(name) & (dataset.splits == SPLIT_CODES[split])
    return encoding.preprocess(dataset.arrays[name][rows]), dataset.labels[rows]
