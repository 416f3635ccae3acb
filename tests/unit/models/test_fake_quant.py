"""Fake quantization for QAT: what it rounds is what ONNX Runtime's static INT8 (operators: weighted) runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from rooivalk.export.onnx_export import export_module
from rooivalk.export.quantize import QuantizeConfig, quantize_static_int8, weighted_nodes
from rooivalk.models import fake_quant


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 32), nn.Tanh(), nn.Linear(32, 5)
    ).eval()


def test_activation_qparams_are_ort_minmax_uint8() -> None:
    assert fake_quant.activation_qparams(-1.0, 3.0) == pytest.approx((4.0 / 255, 64))
    assert fake_quant.activation_qparams(0.5, 2.0) == pytest.approx((2.0 / 255, 0))  # widened to hold 0
    assert fake_quant.activation_qparams(0.0, 0.0) == (1.0, 0)


def test_prepare_and_strip_keep_the_state_dict_and_the_float_weights() -> None:
    model = _model()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    assert fake_quant.prepare(model) == 3
    assert fake_quant.is_prepared(model)
    with pytest.raises(ValueError, match="already"):
        fake_quant.prepare(model)
    keys = set(model.state_dict())
    assert "0.parametrizations.weight.original" in keys
    assert "0.qat_range" in keys
    assert fake_quant.strip(model) == 3
    assert not fake_quant.is_prepared(model)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[key], before[key]) for key in before)


def test_training_rounds_weights_per_channel_and_inputs_to_observed_ranges() -> None:
    model = _model()
    x = torch.randn(64, 3, 16)
    fake_quant.prepare(model, momentum=1.0)
    model.train()
    model(x)  # observes the ranges
    conv = model[0]
    low, high, seen = conv.qat_range[0].tolist()
    assert seen == 1
    assert low == pytest.approx(float(x.min()))
    assert high == pytest.approx(float(x.max()))
    weight = conv.weight  # the parametrized (rounded) weight
    scale = conv.parametrizations.weight.original.detach().abs().flatten(1).amax(1) / 127
    steps = weight.detach() / scale[:, None, None]
    assert torch.allclose(steps, steps.round(), atol=1e-4)  # every weight is an int8 step of its channel
    assert steps.abs().max() <= 127 + 1e-4
    model.eval()
    model(x * 10)
    assert conv.qat_range[:, 2].tolist() == [1, 1]  # eval does not move the ranges


def test_fake_quantized_model_matches_onnx_runtime_weighted_int8(tmp_path: Path) -> None:
    """Ranges observed on one batch (momentum 1) and ORT's MinMax calibration on the same batch give the
    same scales, so ORT's INT8 graph computes what the fake-quantized model computed in training."""
    model = _model()
    x = torch.randn(128, 3, 16)
    fake_quant.prepare(model, momentum=1.0)
    model.train()
    model(x)
    model.eval()
    with torch.no_grad():
        simulated = model(x).numpy()
    fake_quant.strip(model)
    with torch.no_grad():
        plain = model(x).numpy()
    fp32 = tmp_path / "model.onnx"
    export_module(model, (x[:2],), ["x"], ["logits"], fp32)
    int8 = tmp_path / "model_int8.onnx"
    config = QuantizeConfig(operators="weighted", fp32_leading_convs=0, batch_size=128)
    quantize_static_int8(fp32, int8, {"x": x.numpy()}, config)
    assert len(weighted_nodes(fp32)) == 3
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    ran = session.run(None, {"x": x.numpy()})[0]
    # ORT calibrates each range on the float graph, training observed it on the rounded one: the ranges
    # differ by a fraction of a step, so values round a step or two apart at most.
    low, high = model[5].weight.new_tensor([float(plain.min()), float(plain.max())]).tolist()
    output_step = fake_quant.activation_qparams(low, high)[0]
    assert np.abs(ran - simulated).max() <= 3 * output_step
    assert (ran.argmax(1) == simulated.argmax(1)).mean() > 0.95
    # What ORT rounds is what training rounded: each weighted node's input, weight and output (here x,
    # conv1d, view, linear, tanh, logits: 2 x 3 activations), never the output of Relu or Tanh.
    graph = onnx.load(str(int8)).graph
    rounded = {node.input[0] for node in graph.node if node.op_type == "QuantizeLinear"}
    weights = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"} & {
        init.name for init in graph.initializer
    }
    assert len([name for name in weights if name.endswith("weight_quantized")]) == 3
    assert len(rounded) == 2 * 3
    assert "x" in rounded
    with torch.no_grad():
        assert not np.allclose(plain, simulated)
