"""TensorRT engines (fp16, int8) built from the exported ONNX models, for GPU nodes.

TensorRT and a CUDA GPU exist only in the GPU image on a GPU node: nothing here imports `tensorrt`
(or touches CUDA) at module import time, and `tensorrt_available()` says, without raising, what is
missing. The ONNX checks (profile shapes, Q/DQ form) need only `onnx` and run before TensorRT is
needed, so a bad input fails the same way on any machine.

Two TensorRT API generations are supported, told apart by whether `BuilderFlag.FP16` exists:
- TensorRT 10 (weak typing): fp16 = the FP32 ONNX with BuilderFlag.FP16; int8 = the QDQ ONNX
  (explicit quantization) with BuilderFlag.INT8 + FP16, so non-quantized layers may run in fp16.
- TensorRT 11 (the GPU image pins 11.4): every network is strongly typed and the precision flags are
  gone. fp16 = an FP16 copy of the ONNX (onnxruntime's converter, float32 inputs and outputs kept);
  int8 = the QDQ ONNX as is, so layers outside Q/DQ pairs run in fp32.
Either way there is no implicit calibrator: INT8 scales come from the QDQ model's static calibration.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rooivalk import storage
from rooivalk.export._tensorrt_onnx import (
    PRECISIONS,
    EngineBuildError,
    check_engine_source,
    float16_copy,
    profile_shapes,
)

__all__ = [
    "PRECISIONS",
    "EngineBuildError",
    "Precision",
    "TensorRTUnavailable",
    "build_engine",
    "check_engine_source",
    "engine_latency",
    "engine_outputs",
    "engine_sidecar",
    "profile_shapes",
    "sidecar_path",
    "tensorrt_available",
]

log = logging.getLogger(__name__)

Precision = Literal["fp16", "int8"]
MIN_TENSORRT_MAJOR = 10


class TensorRTUnavailable(RuntimeError):
    """TensorRT engines cannot be built or run here; the message names what is missing."""


def tensorrt_available() -> tuple[bool, str]:
    """(ok, reason): whether the tensorrt package (>= 10) imports and torch sees a CUDA GPU. Never raises."""
    missing: list[str] = []
    version = gpu = ""
    try:
        import tensorrt as trt

        version = str(trt.__version__)
        if int(version.split(".")[0]) < MIN_TENSORRT_MAJOR:
            missing.append(f"TensorRT >= {MIN_TENSORRT_MAJOR} (found {version})")
    except ModuleNotFoundError as error:
        if error.name != "tensorrt":
            missing.append(f"a complete tensorrt install ({error})")
        else:
            missing.append("the tensorrt package (not installed; the GPU image ships tensorrt-cu13)")
    except Exception as error:  # noqa: BLE001  (a broken install raises OSError etc. from its CUDA libraries)
        missing.append(f"a working tensorrt package (import failed: {type(error).__name__}: {error})")
    try:
        import torch

        if torch.version.cuda is None:
            missing.append("a CUDA GPU (torch is a CPU-only build)")
        elif not torch.cuda.is_available():
            missing.append("a CUDA GPU (torch.cuda.is_available() is False)")
        else:
            gpu = torch.cuda.get_device_name(torch.cuda.current_device())
    except Exception as error:  # noqa: BLE001
        missing.append(f"a CUDA GPU (torch failed: {type(error).__name__}: {error})")
    if missing:
        return False, "TensorRT is unavailable: missing " + "; ".join(missing)
    return True, f"TensorRT {version} on {gpu}"


def _require_tensorrt() -> Any:
    ok, reason = tensorrt_available()
    if not ok:
        raise TensorRTUnavailable(reason)
    import tensorrt as trt

    return trt


def _strongly_typed_only(trt: Any) -> bool:
    """TensorRT 11 removed the weak-typing precision flags (BuilderFlag.FP16, INT8, ...)."""
    return not hasattr(trt.BuilderFlag, "FP16")


@functools.cache
def _logger() -> Any:
    """One logger per process: TensorRT keeps the first logger it is given for every later builder
    and runtime, so a logger per call would leave later messages on a dead object."""
    import tensorrt as trt

    severity = trt.ILogger.Severity

    class _Logger(trt.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, level: Any, message: str) -> None:
            if level in (severity.INTERNAL_ERROR, severity.ERROR):
                self.errors.append(message)
                log.error("TensorRT: %s", message)
            elif level == severity.WARNING:
                log.warning("TensorRT: %s", message)
            else:
                log.debug("TensorRT: %s", message)

    return _Logger()


def sidecar_path(engine_path: str | Path) -> Path:
    """`<engine_path>.json`: the build's versions, GPU, precision, source ONNX and profile."""
    path = Path(engine_path)
    return path.with_name(path.name + ".json")


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    precision: Precision,
    max_batch: int = 32,
    workspace_mb: int = 2048,
) -> Path:
    """Build a serialized TensorRT engine with one optimization profile and write it atomically,
    with its sidecar JSON beside it. fp16 takes the FP32 ONNX, int8 the static INT8 QDQ ONNX."""
    source, target = Path(onnx_path), Path(engine_path)
    if workspace_mb < 1:
        raise ValueError(f"workspace_mb must be >= 1, got {workspace_mb}")
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such ONNX file")
    check_engine_source(source, precision)
    shapes = profile_shapes(source, max_batch)
    trt = _require_tensorrt()
    strongly_typed = _strongly_typed_only(trt)
    logger = _logger()
    logger.errors.clear()
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode since TensorRT 10
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
    parser = trt.OnnxParser(network, logger)
    with tempfile.TemporaryDirectory(prefix="rooivalk-trt-") as folder:
        parsed = float16_copy(source, Path(folder)) if strongly_typed and precision == "fp16" else source
        if not parser.parse_from_file(str(parsed)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            copy = f" (its FP16 copy {parsed.name})" if parsed != source else ""
            raise EngineBuildError(
                f"TensorRT could not parse {source}{copy}: " + "; ".join(errors or logger.errors or ["no error given"])
            )
    _check_network_inputs(network, shapes, source)
    profile = builder.create_optimization_profile()
    for name, shape in shapes.items():
        profile.set_shape(name, shape["min"], shape["opt"], shape["max"])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT failed to build the {precision} engine of {source.name}: "
            + "; ".join(logger.errors or ["see TensorRT's log"])
        )
    storage.write_bytes(target, bytes(memoryview(serialized)))
    sidecar = engine_sidecar(target, source, precision, shapes)
    sidecar["build"] = {
        "strongly_typed": strongly_typed,
        "built_from": "an FP16 copy of the ONNX" if parsed != source else "the ONNX as given",
        # Layers outside Q/DQ pairs: TensorRT 10's FP16 flag lets them run in fp16, TensorRT 11 keeps the model's fp32.
        "unquantized_layers": "fp32" if strongly_typed and precision == "int8" else "fp16",
        "max_batch": max_batch,
        "workspace_mb": workspace_mb,
    }
    storage.write_text(sidecar_path(target), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    log.info("built %s engine %s from %s", precision, target, source.name)
    return target


def _check_network_inputs(network: Any, shapes: Mapping[str, Any], source: Path) -> None:
    """The parsed network's inputs are the ONNX graph's: each gets exactly one profile entry."""
    names = {network.get_input(i).name for i in range(network.num_inputs)}
    if names != set(shapes):
        raise EngineBuildError(
            f"{source.name}: TensorRT's network inputs {sorted(names)} differ from the ONNX inputs {sorted(shapes)}"
        )


def engine_sidecar(
    engine_path: str | Path, onnx_path: str | Path, precision: str, input_shapes: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """What an engine was built with and for: it runs only on the same TensorRT version and GPU
    architecture, so a deployment reads this before loading it."""
    trt = _require_tensorrt()
    import torch

    engine, source = Path(engine_path), Path(onnx_path)
    properties = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        "tensorrt": str(trt.__version__),
        "cuda_runtime": _cuda_runtime_version() or torch.version.cuda,
        "cuda_driver": _cuda_driver_version(),
        "gpu": properties.name,
        "compute_capability": f"{properties.major}.{properties.minor}",
        "precision": precision,
        "engine": {"file": engine.name, "sha256": storage.sha256_file(engine) if engine.is_file() else None},
        "onnx": {"file": source.name, "sha256": storage.sha256_file(source)},
        "inputs": {
            name: {
                "min": [int(d) for d in shape["min"]],
                "opt": [int(d) for d in shape["opt"]],
                "max": [int(d) for d in shape["max"]],
                "dtype": str(shape["dtype"]),
            }
            for name, shape in input_shapes.items()
        },
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _version_text(number: int) -> str:
    """CUDA's integer versions: 13000 -> '13.0', 12080 -> '12.8'."""
    return f"{number // 1000}.{number % 1000 // 10}"


def _cuda_runtime_version() -> str | None:
    """The CUDA runtime's version through cuda-python, when installed (else the caller uses torch's)."""
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        error, number = cudart.cudaRuntimeGetVersion()
        return _version_text(int(number)) if int(error) == 0 else None
    except Exception:  # noqa: BLE001  (optional package; any failure means "unknown")
        return None


def _cuda_driver_version() -> str | None:
    """The CUDA version the installed driver supports, from libcuda itself (no extra package)."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        number = ctypes.c_int()
        return _version_text(number.value) if libcuda.cuDriverGetVersion(ctypes.byref(number)) == 0 else None
    except OSError:
        return None


class _EngineRun:
    """An engine with torch CUDA tensors bound to every input and output for one set of feeds."""

    def __init__(self, engine_path: str | Path, input_feeds: Mapping[str, np.ndarray]) -> None:
        trt = _require_tensorrt()
        import torch

        path = Path(engine_path)
        self.runtime = trt.Runtime(_logger())  # kept: the engine must not outlive its runtime
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineBuildError(f"{path}: TensorRT could not load the engine (another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in inputs]
        if set(input_feeds) != set(inputs):
            raise ValueError(f"{path.name} takes inputs {sorted(inputs)}, got feeds {sorted(input_feeds)}")
        self.buffers: dict[str, Any] = {}
        for name in inputs:
            array = np.ascontiguousarray(input_feeds[name])
            tensor = torch.from_numpy(array).to("cuda", dtype=self._dtype(trt, name))
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                allowed = self.engine.get_tensor_profile_shape(name, 0)
                raise ValueError(f"{path.name}: input {name!r} of shape {tuple(tensor.shape)} is outside {allowed}")
            self.buffers[name] = tensor
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            self.buffers[name] = torch.empty(shape, dtype=self._dtype(trt, name), device="cuda")
        for name, tensor in self.buffers.items():
            self.context.set_tensor_address(name, tensor.data_ptr())
        self.stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        torch.cuda.synchronize()  # the feeds' copies ran on the default stream

    def _dtype(self, trt: Any, name: str) -> Any:
        import torch

        return torch.from_numpy(np.empty(0, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))).dtype

    def run(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see TensorRT's log)")
        self.stream.synchronize()

    def results(self) -> dict[str, np.ndarray]:
        return {name: self.buffers[name].cpu().numpy() for name in self.outputs}


def engine_outputs(engine_path: str | Path, input_feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the engine once on host arrays; every output as a host array, to compare with ORT's."""
    run = _EngineRun(engine_path, input_feeds)
    run.run()
    return run.results()


def engine_latency(
    engine_path: str | Path, input_feeds: Mapping[str, np.ndarray], runs: int = 100, warmup: int = 10
) -> dict[str, float | int]:
    """Median and p95 wall-clock latency of one inference with inputs already on the GPU (no host
    copies): `warmup` untimed runs, then `runs` timed ones, each synchronized before the clock stops."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    run = _EngineRun(engine_path, input_feeds)
    for _ in range(warmup):
        run.run()
    times = np.empty(runs)
    for index in range(runs):
        start = time.perf_counter()
        run.run()
        times[index] = time.perf_counter() - start
    return {"median_ms": float(np.median(times) * 1e3), "p95_ms": float(np.percentile(times, 95) * 1e3), "runs": runs}
