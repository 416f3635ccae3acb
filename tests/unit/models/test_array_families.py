"""The array model families `rnn` and `mlp` (rooivalk.models.array_families): presets and
`<cell>-<hidden>x<layers>` shapes, mlp widths, errors naming model.architecture or model.num_features,
building through rooivalk.models.create_model, and `model.pretrained` loading only the tensors whose
name and shape match (a head of another class count keeps its initialization)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from rooivalk.models import create_model, create_unweighted_model, family_task, layer_groups
from rooivalk.models.array_families import load_matching_weights, mlp_widths, rnn_settings
from rooivalk.models.mlp import TabularMLP, build_mlp
from rooivalk.models.rnn import PRESETS, RNNClassifier, RNNSettings
from rooivalk.plan import ModelSpec


def rnn_spec(architecture: str = "gru-8x2", **changes: object) -> ModelSpec:
    return ModelSpec.model_validate({"family": "rnn", "architecture": architecture, "num_features": 6, **changes})


def mlp_spec(architecture: str = "16-8", **changes: object) -> ModelSpec:
    return ModelSpec.model_validate({"family": "mlp", "architecture": architecture, "num_features": 5, **changes})


def save_state(model: nn.Module, path: Path) -> str:
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_preset_keeps_its_shape_and_takes_the_plans_drop_rate(preset: str) -> None:
    settings = rnn_settings(preset, 0.05)
    assert settings == replace(PRESETS[preset], dropout=0.05)
    assert settings.dropout != PRESETS[preset].dropout  # the presets' own 0.3 is replaced


@pytest.mark.parametrize(
    ("architecture", "cell", "hidden", "layers"),
    [("gru-8x1", "gru", 8, 1), ("lstm-32x3", "lstm", 32, 3), ("gru-128x2", "gru", 128, 2)],
)
def test_a_cell_hidden_layers_shape_is_parsed_with_drop_rate_as_dropout(
    architecture: str, cell: str, hidden: int, layers: int
) -> None:
    settings = rnn_settings(architecture, 0.25)
    assert settings == RNNSettings(cell=cell, hidden=hidden, layers=layers, dropout=0.25)
    assert settings.bidirectional_first is True  # as the presets
    assert settings.dense == 256


@pytest.mark.parametrize(
    "architecture", ["gru-128", "rnn-8x1", "GRU-8x1", "gru-8x1 ", "gru_8x1", "gru-x2", "gru-8x", "", "standard2"]
)
def test_a_bad_rnn_architecture_names_model_architecture(architecture: str) -> None:
    with pytest.raises(ValueError, match=r"model\.architecture: .* is not an rnn shape") as error:
        rnn_settings(architecture, 0.1)
    assert repr(architecture) in str(error.value)
    assert "lightweight, standard, deep" in str(error.value)  # the presets it could have named


@pytest.mark.parametrize(("architecture", "widths"), [("256-128-64", [256, 128, 64]), ("16", [16]), ("8-8", [8, 8])])
def test_mlp_widths_are_the_hidden_layers(architecture: str, widths: list[int]) -> None:
    assert mlp_widths(architecture) == widths


@pytest.mark.parametrize("architecture", ["", "16-", "-16", "16--8", "a-b", "16_8", "16 8", "gru-8x1", "standard"])
def test_a_bad_mlp_architecture_names_model_architecture(architecture: str) -> None:
    with pytest.raises(ValueError, match=r"model\.architecture: .* is not an mlp shape") as error:
        mlp_widths(architecture)
    assert repr(architecture) in str(error.value)


@pytest.mark.parametrize("spec", [rnn_spec(num_features="auto"), mlp_spec(num_features="auto")])
def test_num_features_auto_cannot_be_built(spec: ModelSpec) -> None:
    with pytest.raises(ValueError, match=rf"model\.num_features is auto: a {spec.family} model is built once"):
        create_model(spec, 3)


def test_bad_architectures_are_refused_by_create_model_too() -> None:
    with pytest.raises(ValueError, match=r"model\.architecture: 'gru-8' is not an rnn shape"):
        create_model(rnn_spec("gru-8"), 3)
    with pytest.raises(ValueError, match=r"model\.architecture: 'lightweight' is not an mlp shape"):
        create_model(mlp_spec("lightweight"), 3)


def test_create_model_builds_the_mlp_of_the_widths() -> None:
    model = create_model(mlp_spec("16-8", drop_rate=0.1), 3)
    assert isinstance(model, TabularMLP)
    assert family_task("mlp") == "table"
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5, 16), (16, 8), (8, 3)]
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.1}
    assert model.eval()(torch.randn(4, 5)).shape == (4, 3)


def test_create_model_builds_the_rnn_of_the_shape() -> None:
    model = create_model(rnn_spec("lstm-8x2", drop_rate=0.15), 4)
    assert isinstance(model, RNNClassifier)
    assert family_task("rnn") == "sequence"
    assert model.cell == "lstm"
    assert len(model.recurrent) == 2
    first = model.recurrent[0]
    assert isinstance(first, nn.LSTM)
    assert (first.input_size, first.hidden_size) == (6, 8)
    assert model.first_backward is not None  # bidirectional first layer
    assert model.dropout.p == 0.15
    assert model.head[-1].out_features == 4
    assert model.eval()(torch.randn(2, 5, 6), torch.tensor([5, 3])).shape == (2, 4)


def test_matching_tensors_load_and_a_head_of_another_class_count_keeps_its_initialization(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trained = create_model(rnn_spec(), 3)
    uri = save_state(trained, tmp_path / "model.pt")
    torch.manual_seed(1)
    model = create_model(rnn_spec(), 5)  # a new class count: only the last layer differs in shape
    before = {name: value.clone() for name, value in model.state_dict().items()}
    fresh = load_matching_weights(model, uri)
    assert fresh == ["head.3.bias", "head.3.weight"]
    state, old = model.state_dict(), trained.state_dict()
    for name in fresh:
        torch.testing.assert_close(state[name], before[name], rtol=0, atol=0)
    loaded = [name for name in state if name not in fresh]
    assert {"recurrent.0.weight_ih_l0", "first_backward.weight_ih_l0", "head.0.weight"} <= set(loaded)
    for name in loaded:
        torch.testing.assert_close(state[name], old[name], rtol=0, atol=0)
        assert not torch.equal(before[name], old[name])  # it really changed: different seeds


def test_model_pretrained_loads_the_matching_tensors_when_the_model_is_built(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trained = create_model(mlp_spec(), 3)
    uri = save_state(trained, tmp_path / "mlp.pt")
    torch.manual_seed(1)
    model = create_model(mlp_spec(pretrained=uri), 4)
    state, old = model.state_dict(), trained.state_dict()
    torch.testing.assert_close(state["body.0.0.weight"], old["body.0.0.weight"], rtol=0, atol=0)
    assert state["head.weight"].shape == (4, 8)  # its own head, not the 3-class one


def test_a_state_dict_with_nothing_matching_is_refused(tmp_path: Path) -> None:
    uri = save_state(create_model(mlp_spec(), 3), tmp_path / "mlp.pt")
    with pytest.raises(ValueError, match=rf"model\.pretrained: no tensor of {uri} matches the model"):
        load_matching_weights(create_model(rnn_spec(), 3), uri)
    # Same names, other shapes: an mlp without batch norm of other widths and feature count.
    other = build_mlp(7, 2, hidden=(32, 4), batch_norm=False)
    with pytest.raises(ValueError, match=r"no tensor of .*other\.pt matches the model by name and shape"):
        load_matching_weights(
            build_mlp(5, 3, hidden=(16, 8), batch_norm=False), save_state(other, tmp_path / "other.pt")
        )


def test_an_unrelated_mlp_whose_only_common_tensors_are_batch_norm_counters_is_refused(tmp_path: Path) -> None:
    uri = save_state(create_model(mlp_spec("32-4", num_features=7), 2), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no tensor of .* matches the model by name and shape"):
        load_matching_weights(create_model(mlp_spec(), 3), uri)


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match=r"model\.pretrained: .* holds a Tensor, not a state dict"):
        load_matching_weights(create_model(mlp_spec(), 3), str(path))


def test_create_unweighted_model_builds_an_rnn_with_num_features_auto() -> None:
    spec = ModelSpec(family="rnn", architecture="lightweight")
    assert spec.num_features == "auto"
    model = create_unweighted_model(spec)
    assert isinstance(model, RNNClassifier)
    assert model.recurrent[0].input_size == 1  # one feature: the groups do not depend on it
    assert model.head[-1].out_features == 2
    assert [group.name for group in layer_groups(model)] == ["recurrent", "head"]
    mlp = create_unweighted_model(ModelSpec(family="mlp", architecture="16-8"))
    assert [group.name for group in layer_groups(mlp)] == ["body", "head"]


def test_create_unweighted_model_ignores_model_pretrained(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.pt")
    model = create_unweighted_model(ModelSpec(family="rnn", architecture="gru-8x1", pretrained=missing))
    assert isinstance(model, RNNClassifier)
