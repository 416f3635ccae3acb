"""The tabular MLP: shapes, layer groups, the batch-norm and dropout options, and that it learns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rooivalk.models import layer_groups
from rooivalk.models.mlp import TabularMLP, build_mlp


def test_defaults_are_the_attribution_mlp() -> None:
    model = build_mlp(num_features=12, num_classes=5).eval()
    assert model(torch.randn(7, 12)).shape == (7, 5)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 256), (256, 128), (128, 64), (64, 5)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 3
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.3}
    assert model.train()(torch.randn(4, 12)).shape == (4, 5)


def test_layer_groups_split_body_and_head() -> None:
    model = build_mlp(4, 3, hidden=(8, 6))
    groups = layer_groups(model)
    assert [g.name for g in groups] == ["body", "head"]
    assert groups[1].param_names == ["head.weight", "head.bias"]
    assert all(name.startswith("body.") for name in groups[0].param_names)
    assert model.get_classifier() is model.head


def test_without_batch_norm_or_dropout() -> None:
    model = build_mlp(4, 3, hidden=(8,), dropout=0.0, batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    inputs = torch.randn(5, 4)
    # No dropout and no batch statistics: training mode computes what eval mode does.
    torch.testing.assert_close(model.train()(inputs), model.eval()(inputs))
    assert model.train()(inputs[:1]).shape == (1, 3)  # one row is fine without BatchNorm1d


def test_dropout_is_active_in_training_only() -> None:
    torch.manual_seed(0)
    model = build_mlp(4, 3, hidden=(64,), dropout=0.5, batch_norm=False)
    inputs = torch.randn(16, 4)
    assert not torch.allclose(model.train()(inputs), model.train()(inputs))
    torch.testing.assert_close(model.eval()(inputs), model.eval()(inputs))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden": ()}, "at least one hidden layer"),
        ({"hidden": (8, 0)}, ">= 1"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TabularMLP(4, 3, **kwargs)  # type: ignore[arg-type]


def test_learns_a_separable_problem() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    # Three Gaussian blobs in 6 dimensions, far apart: linearly separable.
    centers = torch.randn(3, 6, generator=generator) * 4
    labels = torch.randint(0, 3, (256,), generator=generator)
    features = centers[labels] + torch.randn(256, 6, generator=generator)
    model = build_mlp(6, 3, hidden=(32, 16))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(300):
        batch = torch.arange(step * 32, step * 32 + 32) % 256
        loss = nn.functional.cross_entropy(model.train()(features[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model.eval()(features).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.98
