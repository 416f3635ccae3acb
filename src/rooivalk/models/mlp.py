"""Multilayer perceptron for tables: (B, F) float32 features -> (B, K) logits.

Composition, input to output: one block per hidden width, Linear -> BatchNorm1d (option) -> ReLU ->
Dropout, then a Linear head to the K classes. The defaults are the threat-attribution MLP of the
counter-drone reference plan ([256, 128, 64], dropout 0.3). The features are expected standardized
(the table reader's job); BatchNorm1d then mostly steadies training at the issue's lr 1e-3.

With batch_norm, a training batch needs at least 2 rows (BatchNorm1d cannot estimate a variance from
one); in eval mode the running statistics are used and any batch works, which is how it exports.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

DEFAULT_HIDDEN: tuple[int, ...] = (256, 128, 64)


class TabularMLP(nn.Module):
    def __init__(
        self,
        num_features: int,
        num_classes: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        dropout: float = 0.3,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        widths = [int(width) for width in hidden]
        if not widths:
            raise ValueError("hidden: at least one hidden layer is needed (the body group would be empty)")
        if min(num_features, num_classes, *widths) < 1:
            raise ValueError(
                f"num_features, num_classes and every hidden width must be >= 1; got {num_features}, "
                f"{num_classes}, {widths}"
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout: {dropout} is not in [0, 1)")
        self.num_features = num_features
        self.num_classes = num_classes
        blocks: list[nn.Module] = []
        for width_in, width_out in zip([num_features, *widths[:-1]], widths, strict=True):
            layers: list[nn.Module] = [nn.Linear(width_in, width_out)]
            if batch_norm:
                layers.append(nn.BatchNorm1d(width_out))
            layers += [nn.ReLU(), nn.Dropout(dropout)]
            blocks.append(nn.Sequential(*layers))
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(widths[-1], num_classes)

    def get_classifier(self) -> nn.Module:
        return self.head

    def rooivalk_layer_groups(self) -> list[tuple[str, list[str]]]:
        names = [name for name, _ in self.named_parameters()]
        return [
            ("body", [n for n in names if not n.startswith("head.")]),
            ("head", [n for n in names if n.startswith("head.")]),
        ]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features float32 (B, F) -> logits (B, K)."""
        return self.head(self.body(features))  # type: ignore[no-any-return]


def build_mlp(
    num_features: int,
    num_classes: int,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    dropout: float = 0.3,
    batch_norm: bool = True,
) -> TabularMLP:
    """A tabular classifier; the features and classes come from the data."""
    return TabularMLP(num_features, num_classes, hidden, dropout, batch_norm)
