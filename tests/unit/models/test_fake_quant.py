"""Fake quantization for QAT: what it rounds is what ONNX Runtime's static INT8 (operators: weighted) runs."""

from __future__ import annotations

import copy
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


class _ConvBatchNorm(nn.Module):
    """Conv -> BatchNorm pairs the export folds (found by tracing: not an nn.Sequential), a Linear ->
    BatchNorm1d pair (Gemm), and a conv -> ReLU -> BatchNorm the export cannot fold."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv1d(3, 8, 3, padding=1), nn.BatchNorm1d(8)
        self.conv2, self.bn2 = nn.Conv1d(8, 8, 3, padding=1), nn.BatchNorm1d(8)
        self.conv3, self.bn3 = nn.Conv1d(8, 8, 3, padding=1), nn.BatchNorm1d(8)
        self.linear, self.bn4 = nn.Linear(8 * 16, 16), nn.BatchNorm1d(16)
        self.head = nn.Linear(16, 5)
        for bn in (self.bn1, self.bn2, self.bn3, self.bn4):  # statistics far from the identity
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.2, 3)
            nn.init.uniform_(bn.weight, -2, 2)
            nn.init.uniform_(bn.bias, -1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = self.bn3(torch.relu(self.conv3(x)))  # (N, 8, 16)
        return self.head(torch.relu(self.bn4(self.linear(x.flatten(1)))))


class _Attention(nn.Module):
    """Tokens by a Linear on 3-D inputs (MatMul + Add: rounded before the bias), a transformer layer
    (self-attention's QKV MatMul and output Gemm, its 3-D feed-forward Linears), a head."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Linear(3, 16)
        nn.init.uniform_(self.tokens.bias, 2, 4)  # a bias that moves the range: rounding before it matters
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=True)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(self.tokens(x.transpose(1, 2))).mean(1))  # x (N, 3, 16): 16 tokens


def _folded_scales(model: nn.Module) -> dict[int, torch.Tensor]:
    """id(layer) -> s = gamma / sqrt(var + eps) of the BatchNorm the export folds into it."""
    if not isinstance(model, _ConvBatchNorm):
        return {}
    pairs = [(model.conv1, model.bn1), (model.conv2, model.bn2), (model.linear, model.bn4)]
    return {id(layer): (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach() for layer, bn in pairs}


def _trained_weights(model: nn.Module) -> list[np.ndarray]:
    """The weights as training rounded them, as the export's nodes hold them (folded where it folds)."""
    scales = _folded_scales(model)
    weights = []
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            weights.append(module.in_proj_weight.detach().numpy())
        elif isinstance(module, (nn.Conv1d, nn.Linear)):
            weight = module.weight.detach()
            if id(module) in scales:
                weight = weight * scales[id(module)].reshape(-1, *[1] * (weight.dim() - 1))
            weights.append(weight.numpy())
    return weights


@pytest.mark.parametrize("make", [_ConvBatchNorm, _Attention])
def test_ort_weighted_int8_rounds_exactly_what_training_rounded(make: type[nn.Module], tmp_path: Path) -> None:
    """Every weight ORT's weighted INT8 graph holds is the weight training rounded (a BatchNorm folded
    into its conv, attention's in-projection), and every activation it rounds has the scale and zero
    point of a range training observed, and the other way round (the BatchNorm's output rather than the
    conv's; a 3-D Linear's output before its bias; attention's projections)."""
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(128, 3, 16)
    fake_quant.prepare(model, momentum=1.0, example=lambda: model(x[:2]))
    model.train()
    for module in model.modules():  # observed on what ORT calibrates: BatchNorm with running statistics
        if isinstance(module, nn.BatchNorm1d):
            module.eval()
    model(x)
    model.eval()
    with torch.no_grad():
        simulated = model(x).numpy()
        weights = _trained_weights(model)
    observed = [
        fake_quant.activation_qparams(low, high)
        for name, buffer in model.named_buffers()
        if name.endswith(fake_quant.RANGE_BUFFER)
        for low, high, seen in buffer.tolist()
        if seen > 0
    ]
    fake_quant.strip(model)
    fp32, int8 = tmp_path / "model.onnx", tmp_path / "model_int8.onnx"
    export_module(model, (x[:2],), ["x"], ["logits"], fp32)
    config = QuantizeConfig(operators="weighted", fp32_leading_convs=0, batch_size=128)
    quantize_static_int8(fp32, int8, {"x": x.numpy()}, config)
    graph = onnx.load(str(int8)).graph
    values = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    dequantized = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and values.get(node.input[0], np.zeros(0)).dtype == np.int8:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            quantized, scale = values[node.input[0]].astype(np.float32), values[node.input[1]]
            shape = [1] * quantized.ndim
            shape[axis] = -1
            dequantized.append(quantized * scale.reshape(shape))
    assert len(dequantized) == len(weights)
    for weight in dequantized:  # a MatMul holds its weight transposed (in, out)
        assert any(
            w.shape == weight.shape
            and np.allclose(w, weight, atol=1e-6)
            or w.T.shape == weight.shape
            and np.allclose(w.T, weight, atol=1e-6)
            for w in weights
        ), "an ORT weight that training did not round as ORT does"
    rounded = [
        (float(values[node.input[1]]), int(values[node.input[2]]))
        for node in graph.node
        if node.op_type == "QuantizeLinear"
    ]

    def same(a: tuple[float, int], b: tuple[float, int]) -> bool:
        # ORT calibrates on the float graph, training on the rounded one: ranges a fraction of a step apart
        return abs(a[0] - b[0]) <= 0.02 * b[0] and abs(a[1] - b[1]) <= 2

    assert all(any(same(ort_range, trained) for trained in observed) for ort_range in rounded)
    assert all(any(same(trained, ort_range) for ort_range in rounded) for trained in observed)
    assert len(rounded) == len(observed)
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    ran = session.run(None, {"x": x.numpy()})[0]
    logits = next(node for node in graph.node if node.output[0] == "logits")
    output_step = float(values[logits.input[1]])
    assert np.abs(ran - simulated).max() <= 3 * output_step


@pytest.mark.parametrize("make", [_ConvBatchNorm, _Attention])
def test_strip_restores_folded_and_attention_models(make: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(8, 3, 16)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    count = fake_quant.prepare(model, example=lambda: model(x[:2]))
    assert count == len(fake_quant.quantized_layers(model))
    model.train()
    model(x).sum().backward()  # gradients reach the original weights through the rounding
    originals = [p for name, p in model.named_parameters() if name.endswith("original")]
    assert originals
    assert all(p.grad is not None for p in originals)
    averaged = copy.deepcopy(model)  # what the EMA holds: its hooks round at its own layers' ranges
    averaged(x)
    assert all(
        hook.layer in list(averaged.modules())
        for module in averaged.modules()
        for hook in [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
        if hasattr(hook, "layer")
    )
    assert fake_quant.strip(model) == count
    after = model.state_dict()
    assert list(after) == list(before)
    moved = ("running_mean", "running_var", "num_batches_tracked")  # BatchNorm statistics of the training forward
    assert all(torch.equal(after[key], before[key]) for key in before if not key.endswith(moved))


def test_cross_attention_rounds_each_in_projection_on_its_own_range() -> None:
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    fake_quant.prepare(attention, momentum=1.0)
    query, memory = torch.randn(4, 3, 8), torch.randn(4, 5, 8)
    attention.train()
    attention(query, memory, memory)  # q, then k = v: two MatMuls
    assert attention.qat_range[:, 2].tolist() == [1, 1, 1, 1, 0, 0]
    assert attention.out_proj.qat_range[:, 2].tolist() == [1, 1]
    attention.eval()
    with torch.no_grad():  # eval without gradients: torch's fused fast path must not bypass the rounding
        rounded = attention(query, query, query, need_weights=False)[0]
    fake_quant.strip(attention)
    with torch.no_grad():
        plain = attention(query, query, query, need_weights=False)[0]
    assert not torch.allclose(rounded, plain)
