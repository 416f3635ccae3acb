#!/usr/bin/env python3
"""Build fp16 and int8 TensorRT engines of a tiny CNN, compare them with ONNX Runtime, print one JSON.

Run on a GPU node (the GPU image has TensorRT): `python scripts/gpu_export_check.py [--out DIR]`.
The last stdout line is one JSON object: versions (TensorRT, CUDA, driver, torch, onnx, onnxruntime),
the GPU, per precision the batch-1 latency (median and p95), the engine size and build time, and
max |TRT - ORT| on a batch of random inputs (fp16 against ORT's FP32 model; int8 against ORT's run
of the same QDQ model and against FP32). Exit 0 when both engines were built and run; 2 when
TensorRT or a CUDA GPU is missing (the JSON's "reason" names what).

Stand-alone: it needs torch, onnx, onnxruntime (+ onnxscript for the exporter) and tensorrt, not an
installed rooivalk nor the rest of its dependencies; it loads the two TensorRT modules from src/.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLASSES = 10


def load_tensorrt_module() -> types.ModuleType:
    """rooivalk.export.tensorrt, also where rooivalk is not installed or its export package's other
    dependencies (mlflow, pydantic, ...) are missing, as on a bare GPU machine."""
    try:
        return importlib.import_module("rooivalk.export.tensorrt")
    except ImportError:
        pass
    src = REPO / "src"
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))
    # A bare namespace for rooivalk.export: its __init__ imports the whole export step.
    package = types.ModuleType("rooivalk.export")
    package.__path__ = [str(src / "rooivalk" / "export")]
    sys.modules["rooivalk.export"] = package
    return importlib.import_module("rooivalk.export.tensorrt")


def tiny_cnn(in_chans: int = 3, classes: int = CLASSES) -> Any:
    """Conv-ReLU stages, global pooling and a linear head: the layer types of the real classifiers."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(in_chans, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, classes),
    ).eval()


def export_tiny_cnn(model: Any, path: Path, size: int) -> Path:
    """The project's ONNX conventions: dynamo exporter, opset 18, input "input" (B, C, S, S) with a
    dynamic batch, output "logits"."""
    import torch

    in_chans = next(model.parameters()).shape[1]
    # Batch 2, not 1: torch.export specializes size-1 dimensions to constants.
    program = torch.onnx.export(
        model,
        (torch.randn(2, in_chans, size, size),),
        dynamo=True,
        opset_version=18,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
    )
    assert program is not None
    program.save(str(path), external_data=False)
    return path


def quantize_for_tensorrt(fp32_path: Path, qdq_path: Path, calibration: np.ndarray, batch: int = 16) -> Path:
    """Static INT8 QDQ in the form TensorRT builds: per-channel symmetric int8 weights, symmetric
    int8 activations (zero points 0), biases left in float (TensorRT dequantizes int8 only)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches: Iterator[dict[str, np.ndarray]] = iter(
                {"input": calibration[i : i + batch]} for i in range(0, len(calibration), batch)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared),
            str(qdq_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )
    return qdq_path


def ort_logits(onnx_path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": batch})[0]  # type: ignore[no-any-return]


def run_check(trt_module: Any, out: Path, size: int, runs: int, warmup: int, max_batch: int) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import torch

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    fp32 = export_tiny_cnn(tiny_cnn(), out / "tiny_cnn.onnx", size)
    calibration = rng.standard_normal((64, 3, size, size), dtype=np.float32)
    qdq = quantize_for_tensorrt(fp32, out / "tiny_cnn.int8.onnx", calibration)
    batch = rng.standard_normal((8, 3, size, size), dtype=np.float32)
    # Each engine against ORT on the ONNX it was built from, and both against FP32.
    fp32_logits = ort_logits(fp32, batch)
    reference = {"fp16": fp32_logits, "int8": ort_logits(qdq, batch)}
    result: dict[str, Any] = {
        "check": "gpu_export",
        "ok": True,
        "input_size": size,
        "compare_batch": len(batch),
        "max_abs_ort_fp32_logit": float(np.abs(fp32_logits).max()),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    for precision, source in (("fp16", fp32), ("int8", qdq)):
        start = time.perf_counter()
        engine = trt_module.build_engine(source, out / f"tiny_cnn.{precision}.engine", precision, max_batch=max_batch)
        build_s = time.perf_counter() - start
        sidecar = json.loads(trt_module.sidecar_path(engine).read_text())
        got = trt_module.engine_outputs(engine, {"input": batch})["logits"]
        latency = trt_module.engine_latency(engine, {"input": batch[:1]}, runs=runs, warmup=warmup)
        for key in ("tensorrt", "cuda_runtime", "cuda_driver", "gpu", "compute_capability"):
            result[key] = sidecar[key]
        result[precision] = {
            "latency_batch1_ms": {"median": latency["median_ms"], "p95": latency["p95_ms"], "runs": latency["runs"]},
            "max_abs_diff_vs_ort_fp32": float(np.abs(got - fp32_logits).max()),
            "max_abs_diff_vs_ort_same_onnx": float(np.abs(got - reference[precision]).max()),
            "engine_bytes": engine.stat().st_size,
            "build_s": round(build_s, 2),
            "build": sidecar.get("build", {}),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for the ONNX models and engines (default: a temporary one)")
    parser.add_argument("--size", type=int, default=32, help="input height and width")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per engine (batch 1)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs first")
    parser.add_argument("--max-batch", type=int, default=32, help="the engines' optimization profile maximum")
    args = parser.parse_args(argv)
    trt_module = load_tensorrt_module()
    ok, reason = trt_module.tensorrt_available()
    if not ok:
        print(json.dumps({"check": "gpu_export", "ok": False, "reason": reason}))
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu-export-check-"))
    print(json.dumps(run_check(trt_module, out, args.size, args.runs, args.warmup, args.max_batch), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
