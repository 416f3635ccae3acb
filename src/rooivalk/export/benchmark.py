"""CPU latency and accuracy of exported models, measured the same way for PyTorch and ONNX Runtime."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rooivalk.data.transforms import iter_model_batches
from rooivalk.export.onnx_export import has_dynamic_batch

ACCURACY_BATCH = 256


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    p95_ms: float
    runs: int


def measure_latency(fn: Callable[[Any], Any], sample: Any, runs: int, warmup: int) -> LatencyStats:
    """Wall-clock latency of `fn(sample)`: `warmup` untimed calls, then `runs` timed ones."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    for _ in range(warmup):
        fn(sample)
    times = np.empty(runs)
    for index in range(runs):
        start = time.perf_counter()
        fn(sample)
        times[index] = time.perf_counter() - start
    return LatencyStats(
        median_ms=float(np.median(times) * 1e3), p95_ms=float(np.percentile(times, 95) * 1e3), runs=runs
    )


def ort_providers() -> list[str]:
    """CUDA when this onnxruntime build and machine have it (a GPU node), then the CPU as fallback.

    Latency is measured "on the device it runs on": the same step times CUDA on a GPU node and the CPU here.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def ort_session(onnx_path: str | Path, threads: int | None = None, providers: list[str] | None = None) -> Any:
    """An InferenceSession using as many intra-op threads as torch, so timings compare like for like."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No spin-waiting after a run: a system runs several sessions in turn, and each one's idle pool
    # spinning on the cores starves the next. Measured on the demo system (2 cores): one event through
    # the five shipped models took 36 ms median with spinning, 10.8 ms without; single models unchanged.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(onnx_path), options, providers=providers or ort_providers())


def ort_runner(session: Any) -> Callable[[np.ndarray], np.ndarray]:
    """fn(float32 (B, C, S, S)) -> logits (B, classes) for one session."""
    input_name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: batch})[0]  # type: ignore[no-any-return]

    return run


def torch_runner(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """fn(float32 (B, C, S, S)) -> logits under inference_mode: PyTorch eager FP32, the baseline."""
    model = model.eval()

    def run(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(batch)  # type: ignore[no-any-return]

    return run


def onnx_accuracy(
    session: Any,
    images: np.ndarray,
    labels: np.ndarray,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_chans: int,
) -> float:
    """Top-1 accuracy of an ORT session on uint8 images (N, H, W, C), preprocessed by `to_model_input`."""
    if len(images) == 0:
        raise ValueError("no images to evaluate")
    run = ort_runner(session)
    batch_size = ACCURACY_BATCH if has_dynamic_batch(session) else 1
    correct = 0
    for start, chunk in iter_model_batches(images, batch_size, input_size, mean, std, in_chans):
        predictions = run(chunk.numpy()).argmax(axis=1)  # (B,)
        correct += int((predictions == labels[start : start + batch_size]).sum())
    return correct / len(images)
