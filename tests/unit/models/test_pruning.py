"""Pruning (rooivalk.models.pruning): magnitude masks that survive fine-tuning and fold away; channel pruning
that shrinks layers exactly, keeps the classes, and whose artifacts load and export at their pruned sizes."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rooivalk.export.onnx_export import export_onnx, verify_module
from rooivalk.models import create_model, pruning
from rooivalk.models.array_artifact import ArrayModelInfo, load_array_model, save_array_model
from rooivalk.models.artifact import ModelInfo, load_trained_model, save_trained_model
from rooivalk.models.fusion_transformer import FusionTransformer
from rooivalk.models.sensor_artifacts import SensorTrainResult, load_sensor_model, save_sensor_model
from rooivalk.models.sensor_encoding import sensor_encoding
from rooivalk.plan import ModelSpec
from rooivalk.training.engine.ema import ModelEMA

IMAGE = ModelSpec(architecture="test_efficientnet")
RF = ModelSpec(family="rf_cnn_transformer", architecture="small")
MLP = ModelSpec(family="mlp", architecture="16-8", num_features=5)


def _image_model() -> nn.Module:
    torch.manual_seed(0)
    return create_model(IMAGE, 3).eval()


def _images(count: int = 4) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _train_steps(model: nn.Module, inputs: torch.Tensor, steps: int = 2) -> None:
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        model(inputs).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


# -- magnitude --------------------------------------------------------------------------------------
def test_magnitude_zeroes_the_amount_globally_and_keeps_the_zeros_while_training() -> None:
    model = _image_model()
    layers = pruning.magnitude_layers(model)
    pruning.prune(model, "magnitude", 0.5, _images())
    assert pruning.is_pruned(model)
    masks = [layer.get_buffer("weight_mask") for layer in layers]
    assert sum(int((m == 0).sum()) for m in masks) == pytest.approx(0.5 * sum(m.numel() for m in masks), abs=1)
    _train_steps(model, _images())  # weight_orig moves everywhere; the masked weight stays 0
    for layer, mask in zip(layers, masks, strict=True):
        assert torch.all(layer.weight[mask == 0] == 0)


def test_magnitude_state_dict_works_with_ema_and_make_permanent_restores_the_keys() -> None:
    model = _image_model()
    keys = list(model.state_dict())
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    pruning.prune(model, "magnitude", 0.6, _images())
    with pytest.raises(ValueError, match="pruned already"):
        pruning.prune(model, "magnitude", 0.6, _images())
    assert "conv_stem.weight_orig" in model.state_dict()
    assert "conv_stem.weight_mask" in model.state_dict()
    ema = ModelEMA(model, 0.9)  # deep-copies the pruned model (AveragedModel)
    _train_steps(model, _images())
    ema.update(model)
    model.load_state_dict({k: v.clone() for k, v in ema.module.state_dict().items()})  # a best-epoch copy
    metrics = pruning.make_permanent(model)
    assert not pruning.is_pruned(model)
    assert list(model.state_dict()) == keys  # same keys, in the same order
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    assert metrics["sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert metrics["parameters"] == sum(p.numel() for p in model.parameters())
    assert metrics["layers"] == len(pruning.magnitude_layers(model))
    fresh = create_model(IMAGE, 3)
    fresh.load_state_dict(model.state_dict())  # loads into the family's own model as any artifact does


def test_magnitude_leaves_attention_projections_dense() -> None:
    torch.manual_seed(0)
    model = FusionTransformer({"a": 8, "b": 6}, 3, width=16)
    layers = pruning.magnitude_layers(model)
    assert not any(layer is block.self_attn.out_proj for block in model.encoder.layers for layer in layers)
    assert any(layer is model.encoder.layers[0].linear1 for layer in layers)


# -- channels ---------------------------------------------------------------------------------------
def test_channel_pruning_shrinks_layers_and_keeps_classes_and_forward() -> None:
    model = _image_model()
    before = sum(p.numel() for p in model.parameters())
    stem = model.get_submodule("conv_stem").out_channels
    pruning.prune(model, "channels", 0.5, _images(2))
    assert model.get_submodule("conv_stem").out_channels == stem // 2
    assert model.get_classifier().out_features == 3
    assert model(_images()).shape == (4, 3)
    _train_steps(model, _images())  # the engine fine-tunes it as it is
    metrics = pruning.make_permanent(model)
    assert metrics["parameters"] == sum(p.numel() for p in model.parameters()) < 0.5 * before
    assert metrics["parameter_ratio"] == pytest.approx(metrics["parameters"] / before)
    assert metrics["groups"] > 0
    assert metrics["skipped_groups"] == 0


def test_channel_groups_that_cannot_be_removed_exactly_are_left_whole() -> None:
    """rf_cnn_transformer: its second conv's maps are permuted, then flattened into tokens (torch-pruning
    maps those channels wrongly), and its width runs through attention and LayerNorm: both are skipped,
    while the first conv and the feed-forward hidden layers are pruned."""
    torch.manual_seed(0)
    model = create_model(RF, 3).eval()
    pruning.prune(model, "channels", 0.5, torch.randn(2, 2, 1024))
    cnn = model.get_submodule("cnn")
    assert (cnn[1].out_channels, cnn[5].in_channels, cnn[5].out_channels) == (8, 8, 32)
    assert model.get_submodule("tokens").out_features == 64  # the transformer's width stays
    assert model.get_submodule("transformer.layers.0.linear1").out_features == 64  # 128 -> 64
    assert model(torch.randn(3, 2, 1024)).shape == (3, 3)
    metrics = pruning.make_permanent(model)
    assert metrics["skipped_groups"] >= 1


def test_a_model_torch_pruning_cannot_trace_is_refused() -> None:
    model = create_model(ModelSpec(family="radar_sequence", architecture="gru"), 3)
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="method magnitude"):
        pruning.prune(model, "channels", 0.5, torch.randn(2, 16, 8))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # left as it was
    with pytest.raises(ValueError, match="not pruned"):
        pruning.make_permanent(model)


def test_inputs_are_run_as_the_task_runs_them() -> None:
    torch.manual_seed(0)
    model = FusionTransformer({"a": 8, "b": 6}, 3, width=16).eval()
    inputs = ({"a": torch.randn(2, 8), "b": torch.randn(2, 6)}, torch.ones(2, 2, dtype=torch.bool))
    pruning.prune(model, "channels", 0.5, inputs, forward=lambda m, x: m(*x))
    assert model.encoder.layers[0].linear1.out_features == 16  # feed-forward 32 -> 16; attention stays
    assert model.encoder.layers[0].self_attn.embed_dim == 16
    assert model(*inputs).shape == (2, 3)


# -- artifacts --------------------------------------------------------------------------------------
def _pruned_image_model() -> nn.Module:
    model = _image_model()
    pruning.prune(model, "channels", 0.5, _images(2))
    _train_steps(model, _images())
    pruning.make_permanent(model)
    return model.eval()


def test_a_channel_pruned_image_model_round_trips_and_exports(tmp_path: Path) -> None:
    model = _pruned_image_model()
    info = ModelInfo(
        spec=IMAGE, classes=["a", "b", "c"], input_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.5,) * 3,
        dataset_version="v", plan_digest="d",
    )  # fmt: skip
    save_trained_model(str(tmp_path / "model"), model, info)
    loaded, read = load_trained_model(str(tmp_path / "model"))
    assert read.structure
    assert "conv_stem" in read.structure
    x = _images(8)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    # What the export step does with it: ONNX from the loaded model, checked against PyTorch.
    onnx_path = export_onnx(loaded, 32, 3, tmp_path / "model.onnx")
    check = verify_module(loaded, onnx_path, [x.numpy()])
    assert check.max_rel_diff < 1e-5
    assert check.top1_agreement == 1.0


def test_an_unpruned_artifact_records_no_structure(tmp_path: Path) -> None:
    info = ModelInfo(
        spec=IMAGE, classes=["a", "b", "c"], input_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.5,) * 3,
        dataset_version="v", plan_digest="d",
    )  # fmt: skip
    save_trained_model(str(tmp_path / "model"), _image_model(), info)
    assert load_trained_model(str(tmp_path / "model"))[1].structure is None


def test_channel_pruned_sensor_and_array_models_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rf = create_model(RF, 3).eval()
    pruning.prune(rf, "channels", 0.5, torch.randn(2, 2, 1024))
    pruning.make_permanent(rf)
    result = SensorTrainResult("rf", rf, sensor_encoding(rf, RF), 0.5, 1.0)
    save_sensor_model(str(tmp_path / "rf"), result, RF, ["a", "b", "c"], "v")
    loaded, _ = load_sensor_model(str(tmp_path / "rf"))
    iq = torch.randn(3, 2, 1024)
    with torch.no_grad():
        assert torch.allclose(loaded.model(iq), rf(iq), atol=1e-5)

    mlp = create_model(MLP, 3).eval()
    pruning.prune(mlp, "channels", 0.5, torch.randn(4, 5))
    pruning.make_permanent(mlp)
    info = ArrayModelInfo(kind="table", spec=MLP, classes=["a", "b", "c"], input_names=list("abcde"),
                          dataset_version="v", plan_digest="d")  # fmt: skip
    save_array_model(str(tmp_path / "mlp"), mlp, info)
    loaded_mlp, read = load_array_model(str(tmp_path / "mlp"))
    rows = torch.randn(6, 5)
    assert read.structure is not None
    assert loaded_mlp.body[0][0].out_features == 8
    with torch.no_grad():
        np.testing.assert_allclose(loaded_mlp(rows).numpy(), mlp(rows).numpy(), atol=1e-6)


@pytest.mark.parametrize("method", ["magnitude", "channels"])
def test_channels_last_weights_prune_as_contiguous_ones(method: pruning.Method) -> None:
    """The image task trains in channels_last: the same weights are pruned the same way in either layout."""
    plain, channels_last = _image_model(), _image_model().to(memory_format=torch.channels_last)
    for model in (plain, channels_last):
        pruning.prune(model, method, 0.5, _images(2))
        pruning.make_permanent(model)
    for (key, left), right in zip(plain.state_dict().items(), channels_last.state_dict().values(), strict=True):
        assert torch.equal(left, right), key
