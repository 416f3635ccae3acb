"""Cross-modal fusion: a transformer over one token per sensor embedding, with modality dropout.

Input: a dict of cached sensor embeddings {sensor: (N, D_s)} and a presence mask (N, S). Each
embedding is projected to the model width and tagged with a learned sensor embedding; a learned
class token attends over the present sensors only (absent ones are masked out of attention), and
the class token's output is classified. A missing sensor is therefore handled the same way in
training (modality dropout) and in the field (a sensor that is down or saw nothing).
"""

from __future__ import annotations

import torch
from torch import nn


class ModalityDropout(nn.Module):
    """With probability `p` per event, hide one or up to `max_dropped` of its present sensors.

    Never hides an event's last present sensor. Active in training mode only.
    """

    def __init__(self, p: float = 0.2, max_dropped: int = 2) -> None:
        super().__init__()
        self.p = p
        self.max_dropped = max_dropped

    def forward(self, present: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.training or self.p == 0:
            return present
        n, sensors = present.shape
        hit = torch.rand(n, generator=generator, device=present.device) < self.p
        count = torch.randint(1, self.max_dropped + 1, (n,), generator=generator, device=present.device)
        count = torch.minimum(count, present.sum(dim=1) - 1).clamp_min(0) * hit
        # Random order of the present sensors; drop the first `count` of them.
        noise = torch.rand(n, sensors, generator=generator, device=present.device).masked_fill(~present, 2.0)
        rank = noise.argsort(dim=1).argsort(dim=1)  # rank of each sensor in the random order
        dropped = rank < count[:, None]
        return present & ~dropped


class FusionTransformer(nn.Module):
    def __init__(
        self,
        embedding_dims: dict[str, int],
        num_classes: int,
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
        modality_dropout: float = 0.2,
        max_dropped: int = 2,
    ) -> None:
        super().__init__()
        self.sensors = list(embedding_dims)
        self.project = nn.ModuleDict(
            {name: nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, width)) for name, dim in embedding_dims.items()}
        )
        self.sensor_embedding = nn.Parameter(torch.zeros(len(self.sensors), width))
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.sensor_embedding, std=0.02)
        nn.init.normal_(self.class_token, std=0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)
        self.modality_dropout = ModalityDropout(modality_dropout, max_dropped)

    def get_classifier(self) -> nn.Module:
        return self.head

    def rooivalk_layer_groups(self) -> list[tuple[str, list[str]]]:
        names = [name for name, _ in self.named_parameters()]
        return [
            ("fusion", [n for n in names if not n.startswith("head.")]),
            ("head", [n for n in names if n.startswith("head.")]),
        ]

    def forward(
        self, features: dict[str, torch.Tensor], present: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """features {sensor: (N, D_s)}, present bool (N, S) -> logits (N, classes)."""
        present = self.modality_dropout(present, generator)
        tokens = torch.stack([self.project[name](features[name]) for name in self.sensors], dim=1)  # (N, S, W)
        tokens = tokens + self.sensor_embedding
        cls = self.class_token.expand(tokens.shape[0], -1, -1)
        sequence = torch.cat([cls, tokens], dim=1)  # (N, 1 + S, W)
        # True = ignore; the class token is always attended to, so no row is fully masked.
        ignore = torch.cat([torch.zeros_like(present[:, :1]), ~present], dim=1)
        encoded = self.encoder(sequence, src_key_padding_mask=ignore)
        return self.head(self.norm(encoded[:, 0]))  # type: ignore[no-any-return]
