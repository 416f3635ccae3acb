"""rooivalk.export.tensorrt: the ONNX checks and the missing-TensorRT path everywhere; engines on a GPU.

The tiny CNN, its dynamo export and its TensorRT-shaped QDQ quantization come from
scripts/gpu_export_check.py, so the script and these tests build the same models.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from rooivalk.export._tensorrt_onnx import float16_copy
from rooivalk.export.tensorrt import (
    EngineBuildError,
    Precision,
    TensorRTUnavailable,
    build_engine,
    check_engine_source,
    engine_latency,
    engine_outputs,
    profile_shapes,
    sidecar_path,
    tensorrt_available,
)
from tests.scripts import load_script

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "gpu_export_check.py"
SIZE = 16
AVAILABLE, REASON = tensorrt_available()
needs_tensorrt = pytest.mark.skipif(not AVAILABLE, reason=REASON)


def _script() -> ModuleType:
    return load_script(SCRIPT, "gpu_export_check")


def _model(path: Path, inputs: list[Any], nodes: list[Any], outputs: list[Any]) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(path))
    return path


def _identity(path: Path, shape: list[Any], elem_type: int = TensorProto.FLOAT) -> Path:
    value = helper.make_tensor_value_info("input", elem_type, shape)
    out = helper.make_tensor_value_info("logits", elem_type, shape)
    return _model(path, [value], [helper.make_node("Identity", ["input"], ["logits"])], [out])


def _ort_logits(path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": batch})[0]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The FP32 ONNX of the script's tiny CNN (also under "fp16": the source of fp16 engines), its
    TensorRT-shaped QDQ model, and onnxruntime's default QDQ quantization of it (asymmetric uint8
    activations, int32 biases) as a bad input."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    script = _script()
    folder = tmp_path_factory.mktemp("tiny_cnn")
    torch.manual_seed(0)
    fp32 = script.export_tiny_cnn(script.tiny_cnn(), folder / "tiny_cnn.onnx", SIZE)
    calibration = np.random.default_rng(0).standard_normal((32, 3, SIZE, SIZE), dtype=np.float32)
    qdq = script.quantize_for_tensorrt(fp32, folder / "tiny_cnn.int8.onnx", calibration)
    reader = iter([{"input": calibration[:16]}])

    class Reader:
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(reader, None)

    default_qdq = folder / "tiny_cnn.ort_default.onnx"
    quantize_static(str(fp32), str(default_qdq), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    return {"fp32": fp32, "fp16": fp32, "int8": qdq, "ort_default_int8": default_qdq}


# Without TensorRT (every machine) --------------------------------------------------------------------


def test_importing_the_module_does_not_import_tensorrt() -> None:
    code = "import sys, rooivalk.export.tensorrt; print('tensorrt' in sys.modules, 'tensorrt_bindings' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_tensorrt_available_names_each_missing_piece() -> None:
    if AVAILABLE:
        pytest.skip("TensorRT and a CUDA GPU are both here")
    assert REASON.startswith("TensorRT is unavailable: missing ")
    if importlib.util.find_spec("tensorrt") is None:
        assert "the tensorrt package" in REASON
    if not torch.cuda.is_available():
        assert "a CUDA GPU" in REASON


def _fake_tensorrt(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    module = ModuleType("tensorrt")
    module.__version__ = version  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", module)


def test_reason_with_tensorrt_but_no_gpu_names_only_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_tensorrt(monkeypatch, "11.4.0.106")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ok, reason = tensorrt_available()
    assert not ok
    assert "a CUDA GPU" in reason
    assert "tensorrt package" not in reason


def test_reason_names_a_too_old_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_tensorrt(monkeypatch, "8.6.1")
    ok, reason = tensorrt_available()
    assert not ok
    assert "TensorRT >= 10 (found 8.6.1)" in reason


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("raise OSError('libnvinfer.so.11: cannot open shared object file')", "import failed: OSError: libnvinfer"),
        ("import tensorrt_libs_that_are_missing", "a complete tensorrt install"),
    ],
)
def test_reason_names_a_broken_tensorrt_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, expected: str
) -> None:
    """A bindings wheel without its libraries: the import fails with something other than 'no tensorrt'."""
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text(body + "\n")
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    ok, reason = tensorrt_available()
    assert not ok
    assert expected in reason
    assert "not installed" not in reason


def test_build_engine_without_tensorrt_raises_the_reason(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    if AVAILABLE:
        pytest.skip("TensorRT and a CUDA GPU are both here")
    precisions: tuple[Precision, ...] = ("fp16", "int8")
    for precision in precisions:
        with pytest.raises(TensorRTUnavailable) as raised:
            build_engine(tiny_models[precision], tmp_path / f"m.{precision}.engine", precision)
        assert str(raised.value) == REASON
    assert list(tmp_path.iterdir()) == []  # neither an engine nor a sidecar


def test_profile_of_a_dynamic_batch_model(tiny_models: dict[str, Path]) -> None:
    assert profile_shapes(tiny_models["fp32"], max_batch=32) == {
        "input": {"min": [1, 3, SIZE, SIZE], "opt": [16, 3, SIZE, SIZE], "max": [32, 3, SIZE, SIZE], "dtype": "float32"}
    }
    assert profile_shapes(tiny_models["fp32"], max_batch=1)["input"]["opt"] == [1, 3, SIZE, SIZE]
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        profile_shapes(tiny_models["fp32"], max_batch=0)


def test_profile_of_a_fusion_shaped_model_covers_every_input(tmp_path: Path) -> None:
    """Fusion: one float32 (B, D) per sensor plus "present" bool (B, n_sensors); weights are no inputs."""
    inputs = [
        helper.make_tensor_value_info("optical", TensorProto.FLOAT, ["batch", 8]),
        helper.make_tensor_value_info("rf", TensorProto.FLOAT, ["batch", 4]),
        helper.make_tensor_value_info("present", TensorProto.BOOL, ["batch", 2]),
    ]
    weight = numpy_helper.from_array(np.ones((8, 3), np.float32), "weight")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["optical", "weight"], ["logits"])],
        "fusion",
        inputs + [helper.make_tensor_value_info("weight", TensorProto.FLOAT, [8, 3])],  # IR < 4 style
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "f.onnx"))
    shapes = profile_shapes(tmp_path / "f.onnx", max_batch=8)
    assert list(shapes) == ["optical", "rf", "present"]
    assert shapes["rf"] == {"min": [1, 4], "opt": [4, 4], "max": [8, 4], "dtype": "float32"}
    assert shapes["present"]["dtype"] == "bool"


def test_a_dynamic_dimension_other_than_the_batch_is_an_error_naming_the_input(tmp_path: Path) -> None:
    path = _identity(tmp_path / "m.onnx", ["batch", 3, "height", 8])
    with pytest.raises(EngineBuildError, match=r"m\.onnx: input 'input' has a dynamic dimension 2 \(height\)"):
        profile_shapes(path, max_batch=4)


def test_a_fixed_batch_model_gets_a_fixed_profile(tmp_path: Path) -> None:
    path = _identity(tmp_path / "m.onnx", [1, 3, 8, 8])
    assert profile_shapes(path, max_batch=32)["input"] == {
        "min": [1, 3, 8, 8],
        "opt": [1, 3, 8, 8],
        "max": [1, 3, 8, 8],
        "dtype": "float32",
    }


def test_the_scripts_models_fit_their_precisions(tiny_models: dict[str, Path]) -> None:
    check_engine_source(tiny_models["fp32"], "fp16")
    check_engine_source(tiny_models["int8"], "int8")


def test_fp16_from_a_quantized_model_is_refused(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(EngineBuildError, match="fp16 engines are built from the FP32 ONNX"):
        check_engine_source(tiny_models["int8"], "fp16")


def test_int8_from_a_model_without_qdq_is_refused(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(EngineBuildError, match="no QuantizeLinear/DequantizeLinear nodes"):
        check_engine_source(tiny_models["fp32"], "int8")
    # Checked before TensorRT is needed: the same error on a machine without it.
    with pytest.raises(EngineBuildError, match="no QuantizeLinear/DequantizeLinear nodes"):
        build_engine(tiny_models["fp32"], tmp_path / "m.engine", "int8")


def test_int8_from_onnxruntimes_default_quantization_names_both_problems(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(EngineBuildError) as raised:
        check_engine_source(tiny_models["ort_default_int8"], "int8")
    message = str(raised.value)
    assert "QuantizeBias=False" in message  # int32 biases
    assert "ActivationSymmetric=True" in message  # uint8 activations with nonzero zero points


def test_fp16_copy_for_strongly_typed_tensorrt(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """TensorRT 11 builds fp16 from this copy: topologically sorted (the converter appends its Casts
    last, which TensorRT's parser and onnx.checker refuse), float16 weights, float32 inputs and
    outputs, and the same outputs as FP32 within float16 rounding."""
    copy = float16_copy(tiny_models["fp32"], tmp_path)
    model = onnx.load(str(copy))
    onnx.checker.check_model(model)
    weight_types = {t.data_type for t in model.graph.initializer} - {TensorProto.INT64}  # INT64: Reshape's shape
    assert weight_types == {TensorProto.FLOAT16}
    assert profile_shapes(copy, 32) == profile_shapes(tiny_models["fp32"], 32)
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    batch = np.random.default_rng(2).standard_normal((4, 3, SIZE, SIZE), dtype=np.float32)
    expected = _ort_logits(tiny_models["fp32"], batch)
    assert float(np.abs(_ort_logits(copy, batch) - expected).max()) <= 0.01 * float(np.abs(expected).max())


def test_bad_arguments_are_errors(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        build_engine(tiny_models["fp32"], tmp_path / "m.engine", "int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workspace_mb"):
        build_engine(tiny_models["fp32"], tmp_path / "m.engine", "fp16", workspace_mb=0)
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        build_engine(tmp_path / "missing.onnx", tmp_path / "m.engine", "fp16")


def test_the_script_reports_what_is_missing_and_exits_2(tmp_path: Path) -> None:
    if AVAILABLE:
        pytest.skip("TensorRT and a CUDA GPU are both here")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"check": "gpu_export", "ok": False, "reason": REASON}


def test_the_script_loads_the_module_without_the_export_packages_dependencies() -> None:
    """On a bare GPU machine mlflow, pydantic and kfp are missing: rooivalk.export's __init__ fails
    to import, and the script still gets the TensorRT module."""
    code = (
        "import sys\n"
        "for name in ('mlflow', 'pydantic', 'kfp'): sys.modules[name] = None\n"
        f"sys.path.insert(0, {str(SCRIPT.parent)!r})\n"
        "import gpu_export_check\n"
        "module = gpu_export_check.load_tensorrt_module()\n"
        "print(module.__name__, callable(module.build_engine))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["rooivalk.export.tensorrt", "True"]


# With TensorRT and a CUDA GPU ----------------------------------------------------------------------


@pytest.mark.gpu
@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engine_builds_runs_close_to_ort_and_is_timed(
    tiny_models: dict[str, Path], tmp_path: Path, precision: Precision
) -> None:
    engine = build_engine(tiny_models[precision], tmp_path / f"tiny.{precision}.engine", precision, max_batch=8)
    assert engine == tmp_path / f"tiny.{precision}.engine"
    assert engine.stat().st_size > 0
    sidecar = json.loads(sidecar_path(engine).read_text())
    for key in ("tensorrt", "cuda_runtime", "cuda_driver", "gpu", "compute_capability", "precision", "onnx"):
        assert key in sidecar, key
    assert sidecar["precision"] == precision
    assert sidecar["onnx"]["file"] == tiny_models[precision].name
    assert sidecar["inputs"]["input"] == {
        "min": [1, 3, SIZE, SIZE],
        "opt": [4, 3, SIZE, SIZE],
        "max": [8, 3, SIZE, SIZE],
        "dtype": "float32",
    }
    assert sidecar["compute_capability"] == "{}.{}".format(*torch.cuda.get_device_capability())
    batch = np.random.default_rng(1).standard_normal((4, 3, SIZE, SIZE), dtype=np.float32)
    expected = _ort_logits(tiny_models[precision], batch)  # ORT on the same ONNX (QDQ emulated for int8)
    got = engine_outputs(engine, {"input": batch})["logits"]
    assert got.shape == expected.shape
    tolerance = (0.02 if precision == "fp16" else 0.1) * float(np.abs(expected).max()) + 1e-3
    assert float(np.abs(got - expected).max()) <= tolerance
    latency = engine_latency(engine, {"input": batch[:1]}, runs=100, warmup=5)
    assert latency["runs"] == 100
    assert 0 < latency["median_ms"] <= latency["p95_ms"]


@pytest.mark.gpu
@needs_tensorrt
def test_engine_refuses_feeds_it_was_not_built_for(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    engine = build_engine(tiny_models["fp16"], tmp_path / "tiny.engine", "fp16", max_batch=4)
    with pytest.raises(ValueError, match="takes inputs"):
        engine_outputs(engine, {"pixels": np.zeros((1, 3, SIZE, SIZE), np.float32)})
    with pytest.raises(ValueError, match="outside"):
        engine_outputs(engine, {"input": np.zeros((5, 3, SIZE, SIZE), np.float32)})  # batch > max_batch


@pytest.mark.gpu
@needs_tensorrt
def test_parser_errors_are_listed_and_name_the_file(tmp_path: Path) -> None:
    value = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])
    node = helper.make_node("NoSuchOperator", ["input"], ["logits"], domain="rooivalk.test")
    graph = helper.make_graph([node], "g", [value], [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("rooivalk.test", 1)]
    )
    onnx.save(model, str(tmp_path / "unsupported.onnx"))
    with pytest.raises(EngineBuildError, match=r"could not parse .*unsupported\.onnx.*NoSuchOperator"):
        build_engine(tmp_path / "unsupported.onnx", tmp_path / "m.engine", "fp16")
    assert not (tmp_path / "m.engine").exists()
