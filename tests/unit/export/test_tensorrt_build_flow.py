"""build_engine's calls into TensorRT, against a recording stand-in for the `tensorrt` module.

TensorRT cannot be installed on CPU machines, so the GPU tests (test_tensorrt.py) run only on GPU
nodes. This stand-in has just the API surface build_engine uses, in its two generations: TensorRT 10
(weak typing, BuilderFlag.FP16/INT8) and TensorRT 11 (strongly typed only, no precision flags; the
GPU image's 11.4). It checks which flags are set, which file is parsed, the profile, the atomic
engine + sidecar writes and the error messages; real engines are the GPU tests' job.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from rooivalk.export import tensorrt as rt
from rooivalk.export.tensorrt import EngineBuildError, build_engine, sidecar_path


class _Recorder(ModuleType):
    """`tensorrt` as build_engine sees it; `calls` lists what was asked of it, in order."""

    def __init__(self, version: str, parse_errors: list[str] | None = None, build_fails: bool = False) -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls: list[tuple[Any, ...]] = []
        flags = {"TF32": "TF32"} if version.startswith("11.") else {"TF32": "TF32", "FP16": "FP16", "INT8": "INT8"}
        self.BuilderFlag = SimpleNamespace(**flags)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
        severity = SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)
        self.ILogger: Any = type("ILogger", (), {"Severity": severity, "__init__": lambda self: None})
        self.parse_errors = parse_errors or []
        self.build_fails = build_fails

    def Builder(self, logger: Any) -> Any:  # noqa: N802  (TensorRT's names)
        recorder = self
        network = SimpleNamespace(inputs=[])
        network.get_input = lambda i: network.inputs[i]

        class Builder:
            def create_network(self, flags: int) -> Any:
                recorder.calls.append(("create_network", flags))
                return network

            def create_builder_config(self) -> Any:
                return SimpleNamespace(
                    set_memory_pool_limit=lambda pool, size: recorder.calls.append(("pool", pool, size)),
                    set_flag=lambda flag: recorder.calls.append(("flag", flag)),
                    add_optimization_profile=lambda profile: recorder.calls.append(("add_profile",)),
                )

            def create_optimization_profile(self) -> Any:
                return SimpleNamespace(set_shape=lambda *args: recorder.calls.append(("set_shape", *args)))

            def build_serialized_network(self, net: Any, config: Any) -> bytes | None:
                recorder.calls.append(("build",))
                if recorder.build_fails:
                    logger.log(recorder.ILogger.Severity.ERROR, "out of workspace")
                    return None
                return b"serialized engine"

        return Builder()

    def OnnxParser(self, network: Any, logger: Any) -> Any:  # noqa: N802
        recorder = self

        class Parser:
            num_errors = len(recorder.parse_errors)

            def parse_from_file(self, path: str) -> bool:
                model = onnx.load(path)
                recorder.calls.append(("parse", Path(path).name, model.graph.initializer[0].data_type))
                network.inputs = [SimpleNamespace(name=value.name) for value in model.graph.input]
                network.num_inputs = len(network.inputs)
                return not recorder.parse_errors

            def get_error(self, index: int) -> str:
                return recorder.parse_errors[index]

        return Parser()


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """torch reports one CUDA GPU (an H100's name and capability); the cached TensorRT logger is
    dropped before and after, so no stand-in logger survives into a real TensorRT run."""
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H100 80GB HBM3")
    properties = SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=0: properties)
    rt._logger.cache_clear()
    yield
    rt._logger.cache_clear()


def _install(monkeypatch: pytest.MonkeyPatch, recorder: _Recorder) -> _Recorder:
    monkeypatch.setitem(sys.modules, "tensorrt", recorder)
    return recorder


@pytest.fixture
def conv_onnx(tmp_path: Path) -> Path:
    """Conv with float32 weights and a dynamic batch: enough for the flow (and for the FP16 copy)."""
    weight = helper.make_tensor("weight", TensorProto.FLOAT, [2, 3, 1, 1], [0.5] * 6)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "weight"], ["logits"])],
        "conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2, 4, 4])],
        [weight],
    )
    path = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


@pytest.mark.usefixtures("fake_gpu")
@pytest.mark.parametrize(
    ("version", "flags", "parsed_weight_type"),
    [
        ("10.13.0.35", [("flag", "FP16")], TensorProto.FLOAT),  # weak typing: the FP32 file, FP16 flag
        ("11.4.0.106", [], TensorProto.FLOAT16),  # strongly typed: its FP16 copy, no flags
    ],
)
def test_fp16_build_per_tensorrt_generation(
    monkeypatch: pytest.MonkeyPatch,
    conv_onnx: Path,
    tmp_path: Path,
    version: str,
    flags: list[Any],
    parsed_weight_type: int,
) -> None:
    recorder = _install(monkeypatch, _Recorder(version))
    engine = build_engine(conv_onnx, tmp_path / "out" / "conv.fp16.engine", "fp16", max_batch=8, workspace_mb=64)
    assert engine.read_bytes() == b"serialized engine"
    parsed = "conv.onnx" if parsed_weight_type == TensorProto.FLOAT else "conv.fp16.onnx"
    assert recorder.calls == [
        ("create_network", 0),
        ("pool", "WORKSPACE", 64 << 20),
        *flags,
        ("parse", parsed, parsed_weight_type),
        ("set_shape", "input", [1, 3, 4, 4], [4, 3, 4, 4], [8, 3, 4, 4]),
        ("add_profile",),
        ("build",),
    ]
    sidecar = json.loads(sidecar_path(engine).read_text())
    assert sidecar["tensorrt"] == version
    assert (sidecar["gpu"], sidecar["compute_capability"], sidecar["precision"]) == (
        "NVIDIA H100 80GB HBM3",
        "9.0",
        "fp16",
    )
    assert sidecar["onnx"]["file"] == "conv.onnx"
    assert len(sidecar["onnx"]["sha256"]) == 64
    assert sidecar["engine"]["file"] == "conv.fp16.engine"
    assert sidecar["build"]["strongly_typed"] is version.startswith("11.")
    assert sorted(p.name for p in engine.parent.iterdir()) == ["conv.fp16.engine", "conv.fp16.engine.json"]


@pytest.mark.usefixtures("fake_gpu")
def test_int8_build_on_tensorrt_10_sets_int8_and_fp16(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, conv_onnx: Path
) -> None:
    recorder = _install(monkeypatch, _Recorder("10.13.0.35"))
    monkeypatch.setattr(rt, "check_engine_source", lambda path, precision: None)  # conv_onnx has no Q/DQ
    build_engine(conv_onnx, tmp_path / "conv.int8.engine", "int8")
    assert [call for call in recorder.calls if call[0] == "flag"] == [("flag", "FP16"), ("flag", "INT8")]
    assert json.loads((tmp_path / "conv.int8.engine.json").read_text())["build"]["unquantized_layers"] == "fp16"


@pytest.mark.usefixtures("fake_gpu")
def test_parser_errors_are_all_listed_with_the_file(
    monkeypatch: pytest.MonkeyPatch, conv_onnx: Path, tmp_path: Path
) -> None:
    _install(monkeypatch, _Recorder("10.13.0.35", parse_errors=["node 0: bad Conv", "node 3: no such op"]))
    with pytest.raises(EngineBuildError, match=r"could not parse .*conv\.onnx: node 0: bad Conv; node 3: no such op"):
        build_engine(conv_onnx, tmp_path / "conv.engine", "fp16")
    assert not (tmp_path / "conv.engine").exists()


@pytest.mark.usefixtures("fake_gpu")
def test_a_failed_build_reports_tensorrts_errors_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, conv_onnx: Path, tmp_path: Path
) -> None:
    _install(monkeypatch, _Recorder("11.4.0.106", build_fails=True))
    with pytest.raises(EngineBuildError, match="failed to build the fp16 engine of conv.onnx: out of workspace"):
        build_engine(conv_onnx, tmp_path / "conv.engine", "fp16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.onnx"]
