"""What every sensor model offers the rest of the system: an encoder, a head, and its layer groups.

The split between `forward_features` (the encoder: sample -> (N, embedding_dim)) and `head`
(embedding -> class logits) is what the feature cache and the fusion model rely on: the cache stores
`forward_features` outputs and fusion consumes them, so a sensor model is frozen by keeping its
encoder's weights and the cache key hashes exactly those weights.
"""

from __future__ import annotations

import torch
from torch import nn

from rooivalk.models.groups import HEAD


class SensorModel(nn.Module):
    """A classifier made of named encoder groups (input to output) and a linear head."""

    embedding_dim: int

    def __init__(self, embedding_dim: int, num_classes: int, drop_rate: float) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(embedding_dim, num_classes))

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(inputs))  # type: ignore[no-any-return]

    def get_classifier(self) -> nn.Module:
        return self.head

    # Layer groups of the encoder, input to output: group name -> attributes (modules or parameters).
    encoder_groups: dict[str, list[str]] = {}

    def rooivalk_layer_groups(self) -> list[tuple[str, list[str]]]:
        groups = []
        for group, attributes in self.encoder_groups.items():
            names: list[str] = []
            for attribute in attributes:
                member = getattr(self, attribute)
                if isinstance(member, nn.Parameter):
                    names.append(attribute)
                else:
                    names += [f"{attribute}.{p}" for p, _ in member.named_parameters()]
            groups.append((group, names))
        groups.append((HEAD, [f"head.{p}" for p, _ in self.head.named_parameters()]))
        return [(name, params) for name, params in groups if params]
