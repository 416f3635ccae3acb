"""rooivalk.export.variants on tiny exported models: a CNN, a GRU classifier and a masked transformer.

Each model is exported once (dynamo, opset 18, dynamic batch) and every precision is built from it,
loaded in ORT, run at batch 1 and 5, and compared with the FP32 model on the same rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from rooivalk.export import ort_session
from rooivalk.export.onnx_export import export_module
from rooivalk.export.variants import (
    PRECISIONS,
    FeedsCalibrationReader,
    QuantizeConfig,
    VariantError,
    build_variant,
    convert_fp16,
    quantize_dynamic_int8,
    quantize_static_int8,
    variant_file,
)

# Max |variant - FP32| over the largest |FP32| output (random-init models: small logits, so this is
# strict). Measured: fp16 <= 1e-3, int8_dynamic <= 0.02, int8_static <= 0.08 with 256 calibration rows
# (the GRU's; with 48 rows its clipped ranges gave 0.41 on unseen rows).
TOLERANCE = {"fp32": 0.0, "fp16": 5e-3, "int8_dynamic": 0.05, "int8_static": 0.15}
# Largest variant / FP32 weight bytes (initializers). Measured: fp16 0.50 everywhere; int8_static
# CNN 0.37 (its first two convs stay FP32), fusion 0.28, GRU 0.99 (ORT has no QDQ GRU: only its head
# is INT8); int8_dynamic GRU 0.28, fusion 0.26, CNN 0.996 (convolutions stay FP32, the head is INT8).
MAX_WEIGHT_RATIO = {
    "fp16": dict.fromkeys(("cnn", "gru", "fusion"), 0.51),
    "int8_static": {"cnn": 0.4, "gru": 0.999, "fusion": 0.3},
    "int8_dynamic": {"cnn": 0.999, "gru": 0.3, "fusion": 0.3},
}
CALIBRATION_ROWS = 256


class _Cnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            *(layer for _ in range(3) for layer in (nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, 10),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)  # type: ignore[no-any-return]


class _GruNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(16, 96, batch_first=True)
        self.head = nn.Linear(96, 4)

    def forward(self, tracks: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.gru(tracks)  # (B, T, 96)
        return self.head(hidden[:, -1])  # type: ignore[no-any-return]


class _MaskedFusion(nn.Module):
    """Two sensor embeddings + a presence mask; absent sensors are masked out of attention (-inf)."""

    def __init__(self) -> None:
        super().__init__()
        self.radar, self.rf = nn.Linear(24, 64), nn.Linear(40, 64)
        layer = nn.TransformerEncoderLayer(64, 4, 192, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(64, 3)

    def forward(self, radar: torch.Tensor, rf: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        tokens = torch.stack([self.radar(radar), self.rf(rf)], 1)  # (B, 2, 64)
        encoded = self.encoder(tokens, src_key_padding_mask=~present)
        weight = present.unsqueeze(-1).float()
        return self.head((encoded * weight).sum(1) / weight.sum(1).clamp(min=1))  # type: ignore[no-any-return]


def _rows(model: str, count: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if model == "cnn":
        return {"input": rng.standard_normal((count, 3, 16, 16)).astype(np.float32)}
    if model == "gru":
        return {"input": rng.standard_normal((count, 12, 16)).astype(np.float32)}
    present = rng.random((count, 2)) < 0.6
    present[:, 0] |= ~present[:, 1]  # at least one sensor per row; both patterns with one absent occur
    return {
        "radar": rng.standard_normal((count, 24)).astype(np.float32),
        "rf": rng.standard_normal((count, 40)).astype(np.float32),
        "present": present,
    }


def _export(module: nn.Module, example: dict[str, np.ndarray], path: Path) -> Path:
    """The library's dynamic-batch export (rooivalk.export.onnx_export.export_module)."""
    tensors = tuple(torch.from_numpy(array[:2]) for array in example.values())
    return export_module(module, tensors, list(example), ["logits"], path)


@pytest.fixture(scope="module")
def fp32_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("fp32")
    modules = {"cnn": _Cnn(), "gru": _GruNet(), "fusion": _MaskedFusion()}
    return {name: _export(module, _rows(name, 2, 0), folder / f"{name}.onnx") for name, module in modules.items()}


def _run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort_session(path).run(None, feeds)[0]  # type: ignore[no-any-return]


def _relative_diff(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def _weight_bytes(path: Path) -> int:
    return sum(onnx.numpy_helper.to_array(init).nbytes for init in onnx.load(str(path)).graph.initializer)


def _op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _io(path: Path) -> list[tuple[str, int]]:
    graph = onnx.load(str(path)).graph
    return [(v.name, v.type.tensor_type.elem_type) for v in [*graph.input, *graph.output]]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("model", ["cnn", "gru", "fusion"])
def test_variant_runs_any_batch_and_stays_close_to_fp32(
    fp32_models: dict[str, Path], tmp_path: Path, model: str, precision: Any
) -> None:
    fp32 = fp32_models[model]
    path = build_variant(precision, fp32, tmp_path, _rows(model, CALIBRATION_ROWS, 1), QuantizeConfig())
    if precision == "fp32":
        assert path == fp32  # no copy
    else:
        assert path == tmp_path / variant_file(precision)
        assert sorted(p.name for p in tmp_path.iterdir()) == [variant_file(precision)]  # no temp files left
        assert _weight_bytes(path) / _weight_bytes(fp32) <= MAX_WEIGHT_RATIO[precision][model]
        assert path.stat().st_size < fp32.stat().st_size
    assert _io(path) == _io(fp32)  # same names, float32/bool kept at the edges
    for count in (1, 5):
        feeds = _rows(model, count, 2)
        got, expected = _run(path, feeds), _run(fp32, feeds)
        assert got.shape == (count, expected.shape[1])
        assert got.dtype == np.float32
        assert _relative_diff(got, expected) <= TOLERANCE[precision], (model, precision, count)


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
@pytest.mark.parametrize("model", ["cnn", "gru", "fusion"])
def test_static_int8_calibration_methods(fp32_models: dict[str, Path], tmp_path: Path, model: str, method: Any) -> None:
    config = QuantizeConfig(method=method, percentile=99.99, batch_size=16)
    path = quantize_static_int8(fp32_models[model], tmp_path / "q.onnx", _rows(model, CALIBRATION_ROWS, 1), config)
    assert "QuantizeLinear" in _op_types(path)
    feeds = _rows(model, 16, 2)
    assert _relative_diff(_run(path, feeds), _run(fp32_models[model], feeds)) <= TOLERANCE["int8_static"]


def test_static_int8_keeps_masked_attention_fp32(fp32_models: dict[str, Path], tmp_path: Path) -> None:
    """The -inf key-padding mask stays out of QDQ; quantizing it wrecked the scores (54% of the top logit)."""
    rows = _rows("fusion", CALIBRATION_ROWS, 1)
    path = quantize_static_int8(fp32_models["fusion"], tmp_path / "q.onnx", rows, QuantizeConfig())
    graph = onnx.load(str(path)).graph
    where = [node for node in graph.node if node.op_type == "Where"]
    assert where
    produced_by = {out: node.op_type for node in graph.node for out in node.output}
    for node in where:  # neither its inputs are dequantized nor its output quantized
        assert all(produced_by.get(name) != "DequantizeLinear" for name in node.input)
        assert not any(n.op_type == "QuantizeLinear" and node.output[0] in n.input for n in graph.node)
    feeds = _rows("fusion", 64, 3)
    assert not feeds["present"].all()  # some rows have a sensor masked out
    assert _relative_diff(_run(path, feeds), _run(fp32_models["fusion"], feeds)) <= TOLERANCE["int8_static"]


@pytest.mark.parametrize(("leading", "fp32_convs"), [(2, 2), (0, 0)])
def test_static_int8_leaves_leading_convs_fp32(
    fp32_models: dict[str, Path], tmp_path: Path, leading: int, fp32_convs: int
) -> None:
    config = QuantizeConfig(fp32_leading_convs=leading)
    path = quantize_static_int8(fp32_models["cnn"], tmp_path / "q.onnx", _rows("cnn", 16, 1), config)
    graph = onnx.load(str(path)).graph
    produced_by = {out: node.op_type for node in graph.node for out in node.output}
    dequantized = [
        produced_by.get(node.input[1]) == "DequantizeLinear" for node in graph.node if node.op_type == "Conv"
    ]
    assert len(dequantized) == 5
    assert dequantized == [False] * fp32_convs + [True] * (5 - fp32_convs)


def test_static_int8_uses_batch_one_for_a_fixed_batch_model(fp32_models: dict[str, Path], tmp_path: Path) -> None:
    model = onnx.load(str(fp32_models["cnn"]))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 1
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, str(fixed))
    feeds = _rows("cnn", 1, 2)
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # the input shows it: batch 5 is refused
        _run(fixed, _rows("cnn", 5, 2))
    path = quantize_static_int8(fixed, tmp_path / "q.onnx", _rows("cnn", 7, 1), QuantizeConfig(batch_size=32))
    assert _relative_diff(_run(path, feeds), _run(fixed, feeds)) <= TOLERANCE["int8_static"]


def test_dynamic_int8_quantizes_gru_matmul_and_leaves_convs(fp32_models: dict[str, Path], tmp_path: Path) -> None:
    gru = quantize_dynamic_int8(fp32_models["gru"], tmp_path / "gru.onnx")
    graph = onnx.load(str(gru)).graph
    int8_weights = {init.name for init in graph.initializer if init.data_type == onnx.TensorProto.INT8}
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    (recurrent,) = [node for node in graph.node if node.op_type == "GRU"]
    assert recurrent.input[1] in dequantized  # W
    assert recurrent.input[2] in dequantized  # R
    assert len(int8_weights) >= 2
    assert "MatMulInteger" in _op_types(quantize_dynamic_int8(fp32_models["fusion"], tmp_path / "fusion.onnx"))
    cnn = _op_types(quantize_dynamic_int8(fp32_models["cnn"], tmp_path / "cnn.onnx"))
    assert "Conv" in cnn
    assert "ConvInteger" not in cnn
    assert "MatMulInteger" in cnn


def test_stale_shape_annotations_do_not_break_any_variant(fp32_models: dict[str, Path], tmp_path: Path) -> None:
    """The exporter can leave value_info that ONNX shape inference contradicts (the CREPE framing)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fp32_models["fusion"]))
    (radar,) = [node for node in model.graph.node if node.input[:1] == ["radar"]]  # Gemm: (batch, 64)
    stale_info = onnx.helper.make_tensor_value_info(radar.output[0], onnx.TensorProto.FLOAT, ["batch", 999])
    model.graph.value_info.append(stale_info)
    stale = tmp_path / "stale.onnx"
    onnx.save(model, str(stale))
    with pytest.raises(Exception, match="999"):  # the strict shape inference the quantizers run
        onnx.shape_inference.infer_shapes(model, strict_mode=True)
    with pytest.raises(Exception, match="ShapeInferenceError"):  # ORT's quantizer on the export as it is
        quantize_dynamic(str(fp32_models["fusion"]), str(tmp_path / "raw.onnx"), weight_type=QuantType.QInt8)
    feeds = _rows("fusion", 5, 2)
    for precision in ("fp16", "int8_dynamic", "int8_static"):
        path = build_variant(precision, stale, tmp_path / "out", _rows("fusion", 16, 1), QuantizeConfig())
        assert _relative_diff(_run(path, feeds), _run(stale, feeds)) <= TOLERANCE[precision]


@pytest.mark.parametrize("model", ["cnn", "fusion"])
def test_fp16_stores_every_weight_in_half(fp32_models: dict[str, Path], tmp_path: Path, model: str) -> None:
    path = convert_fp16(fp32_models[model], tmp_path / "half.onnx")
    half = onnx.load(str(path))
    types = {init.data_type for init in half.graph.initializer if init.dims and np.prod(init.dims) > 64}
    assert types == {onnx.TensorProto.FLOAT16}  # every real weight; float32 only at the graph's edges
    onnx.checker.check_model(half)  # topologically sorted and well typed
    if model == "cnn":  # weights dominate this file (the fusion's is 1/3 exporter metadata)
        assert path.stat().st_size / fp32_models[model].stat().st_size < 0.55


def test_closeness_check_catches_a_wrong_model(fp32_models: dict[str, Path], tmp_path: Path) -> None:
    """The tolerances above are not vacuous: a tripled head weight fails every one of them."""
    model = onnx.load(str(fp32_models["cnn"]))
    head = next(init for init in model.graph.initializer if tuple(init.dims) == (10, 64))
    head.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(head) * 3, head.name))
    wrong = tmp_path / "wrong.onnx"
    onnx.save(model, str(wrong))
    feeds = _rows("cnn", 5, 2)
    assert _relative_diff(_run(wrong, feeds), _run(fp32_models["cnn"], feeds)) > max(TOLERANCE.values())


def test_feeds_reader_batches_and_rewinds() -> None:
    reader = FeedsCalibrationReader({"x": np.arange(5.0)[:, None], "m": np.ones((5, 2), bool)}, batch_size=2)
    sizes = [len(batch["x"]) for batch in iter(reader.get_next, None)]
    assert sizes == [2, 2, 1]
    assert len(reader) == 3
    reader.rewind()
    first = reader.get_next()
    assert first is not None
    assert first["m"].dtype == bool
    with pytest.raises(ValueError, match="same number"):
        FeedsCalibrationReader({"x": np.zeros((5, 1)), "m": np.zeros((4, 2))}, batch_size=2)


def test_int8_static_without_calibration_names_the_precision(fp32_models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(VariantError, match="int8_static.*calibration"):
        build_variant("int8_static", fp32_models["cnn"], tmp_path, None, QuantizeConfig())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("precision", PRECISIONS)
def test_missing_fp32_file_names_precision_and_file(tmp_path: Path, precision: Any) -> None:
    missing = tmp_path / "nowhere" / "model_fp32.onnx"
    with pytest.raises(VariantError, match=f"{precision}.*nowhere/model_fp32.onnx"):
        build_variant(precision, missing, tmp_path / "out", _rows("cnn", 4, 1), QuantizeConfig())
    with pytest.raises(VariantError, match="fp16.*nowhere"):
        convert_fp16(missing, tmp_path / "half.onnx")
    with pytest.raises(VariantError, match="int8_dynamic.*nowhere"):
        quantize_dynamic_int8(missing, tmp_path / "dyn.onnx")


@pytest.mark.parametrize("precision", ["fp16", "int8_static", "int8_dynamic"])
def test_unreadable_fp32_file_names_precision_and_file(tmp_path: Path, precision: Any) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(VariantError, match=f"{precision}.*broken.onnx"):
        build_variant(precision, broken, tmp_path / "out", _rows("cnn", 4, 1), QuantizeConfig())
    assert not any((tmp_path / "out").glob("*"))


def test_calibration_missing_an_input_names_it(fp32_models: dict[str, Path], tmp_path: Path) -> None:
    rows = _rows("fusion", 16, 1)
    del rows["present"]
    with pytest.raises(VariantError, match=r"int8_static.*missing \['present'\]"):
        build_variant("int8_static", fp32_models["fusion"], tmp_path, rows, QuantizeConfig())
    rows = {**_rows("fusion", 16, 1), "sonar": np.zeros((16, 3), np.float32)}
    with pytest.raises(VariantError, match=r"unknown \['sonar'\]"):
        build_variant("int8_static", fp32_models["fusion"], tmp_path, rows, QuantizeConfig())
    rows = {**_rows("fusion", 16, 1), "rf": np.zeros((15, 40), np.float32)}
    with pytest.raises(VariantError, match="same number"):
        build_variant("int8_static", fp32_models["fusion"], tmp_path, rows, QuantizeConfig())
    assert list(tmp_path.iterdir()) == []  # nothing published, no temp files


def test_failed_quantization_names_the_file_and_leaves_nothing(fp32_models: dict[str, Path], tmp_path: Path) -> None:
    rows = {"input": np.zeros((4, 5, 16, 16), np.float32)}  # 5 channels for a 3-channel conv
    with pytest.raises(VariantError, match="int8_static.*model_int8_static.onnx"):
        build_variant("int8_static", fp32_models["cnn"], tmp_path, rows, QuantizeConfig())
    assert list(tmp_path.iterdir()) == []


def test_unknown_precision_is_refused(fp32_models: dict[str, Path], tmp_path: Path) -> None:
    unknown: Any = "int4"  # what a hand-edited plan could carry past the type checker
    with pytest.raises(VariantError, match="int4"):
        variant_file(unknown)
    with pytest.raises(VariantError, match="int4"):
        build_variant(unknown, fp32_models["cnn"], tmp_path, None)


class _LogFrontEnd(nn.Module):
    """A spectrogram-like front end (MatMul with a fixed basis, power, Log) then a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("basis", torch.randn(64, 32))
        self.head = nn.Linear(32, 3)

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        power = (samples @ self.basis) ** 2  # (B, 32): many orders of magnitude
        return self.head(torch.log(power + 1e-6))  # type: ignore[no-any-return]


def test_signal_front_ends_feeding_a_log_stay_fp32(tmp_path: Path) -> None:
    import onnx

    from rooivalk.export.quantize import signal_frontend_nodes

    torch.manual_seed(0)
    rows = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    fp32 = _export(_LogFrontEnd().eval(), {"samples": rows}, tmp_path / "model_fp32.onnx")
    front = signal_frontend_nodes(fp32)
    graph = onnx.load(str(fp32)).graph
    ops = {node.name: node.op_type for node in graph.node}
    assert "MatMul" in {ops[name] for name in front}  # the basis MatMul is upstream of the Log
    assert all(ops[name] != "Gemm" for name in front)  # the classifier after the Log is not
    dynamic = onnx.load(str(build_variant("int8_dynamic", fp32, tmp_path, None, QuantizeConfig())))
    assert "MatMulInteger" not in {n.op_type for n in dynamic.graph.node if n.name.startswith(tuple(front))}
    static = build_variant("int8_static", fp32, tmp_path, {"samples": rows}, QuantizeConfig(fp32_leading_convs=0))
    quantized_inputs = {
        i for n in onnx.load(str(static)).graph.node if n.op_type == "DequantizeLinear" for i in n.output
    }
    matmul = next(n for n in onnx.load(str(static)).graph.node if n.op_type == "MatMul")
    assert not quantized_inputs.intersection(matmul.input)  # the front-end MatMul runs in FP32
