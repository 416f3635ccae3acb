"""The `example_mlp_cnn` family: two conv blocks, global average pooling, an MLP head.

The image task trains any nn.Module that speaks timm's small protocol (docs/extending.md):
`pretrained_cfg` (input channels, mean, std), `drop_rate`, `get_classifier()`, and
`forward_features` / `forward_head(x, pre_logits=True)` for stages that train the head on cached
features. `rooivalk_layer_groups()` names the groups progressive unfreezing works with.
"""

from __future__ import annotations

import torch
from torch import nn

from rooivalk.models import register_family
from rooivalk.plan import ModelSpec

# model.architecture -> (conv widths, MLP width)
VARIANTS = {"tiny": ((8, 16), 32), "small": ((16, 32), 64)}


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)
    )


class ExampleMlpCnn(nn.Module):
    def __init__(self, num_classes: int, architecture: str, input_size: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        (c1, c2), hidden = VARIANTS[architecture]
        in_chans = 3  # grayscale data is repeated to 3 channels by rooivalk.data.transforms
        self.pretrained_cfg = {"input_size": (in_chans, input_size, input_size), "mean": (0.5,) * 3, "std": (0.5,) * 3}
        self.drop_rate = drop_rate
        self.stem = _conv_block(in_chans, c1)
        self.block = _conv_block(c1, c2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mlp = nn.Sequential(nn.Linear(c2, hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.stem(x))  # type: ignore[no-any-return]  # (B, c2, H/4, W/4)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.mlp(self.pool(features).flatten(1))  # (B, hidden)
        if pre_logits:
            return pooled  # type: ignore[no-any-return]
        return self.classifier(nn.functional.dropout(pooled, self.drop_rate, self.training))  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def rooivalk_layer_groups(self) -> list[tuple[str, list[str]]]:
        """Input to output; the classifier last, as "head"."""
        return [
            (group, [f"{module}.{name}" for name, _ in getattr(self, module).named_parameters()])
            for group, module in (("stem", "stem"), ("block", "block"), ("mlp", "mlp"), ("head", "classifier"))
        ]


@register_family("example_mlp_cnn", task="example_noisy_images")
def create_example_mlp_cnn(spec: ModelSpec, num_classes: int) -> nn.Module:
    if spec.architecture not in VARIANTS:
        raise ValueError(f"model.architecture: {spec.architecture!r} is not an example_mlp_cnn; use {list(VARIANTS)}")
    if spec.pretrained:
        raise ValueError("model.pretrained: example_mlp_cnn trains from scratch; set it to null")
    return ExampleMlpCnn(num_classes, spec.architecture, spec.input_size, spec.drop_rate)
