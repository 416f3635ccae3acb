"""The export step: trained model -> verified FP32 ONNX -> static INT8 ONNX, with accuracy and latency.

Order matters: the FP32 ONNX model is checked against PyTorch before anything is built on it, and
the INT8 model is calibrated from that verified file. Both are evaluated on the test split with the
same preprocessing as training (`to_model_input`), and timed at batch 1 next to PyTorch eager FP32.
"""

from __future__ import annotations

import json
import logging
import platform
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rooivalk import storage
from rooivalk.data.dataset import load_dataset
from rooivalk.data.transforms import to_model_input
from rooivalk.evaluation.gates import GateFailure, check_gates, describe_failures
from rooivalk.export.benchmark import measure_latency, onnx_accuracy, ort_runner, ort_session, torch_runner
from rooivalk.export.onnx_export import OPSET, export_onnx, onnx_input_info, replace_conv2d_same, verify_onnx
from rooivalk.export.quantize import QuantizeConfig, quantize_int8
from rooivalk.models.artifact import ModelInfo, load_trained_model
from rooivalk.plan import Plan

log = logging.getLogger(__name__)

FP32_FILE = "model_fp32.onnx"
INT8_FILE = "model_int8.onnx"
REPORT_FILE = "export_report.json"
VERIFY_SAMPLES = 32
CALIBRATION_SEED = 0


class ExportError(ValueError):
    """The exported model does not reproduce the PyTorch model (or cannot be built)."""


@dataclass
class ExportResult:
    metrics: dict[str, float]
    artifacts: dict[str, str]  # file name -> path or URI
    gates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(gate["passed"] for gate in self.gates)


def _evaluation_split(dataset_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(train images for calibration, eval images, eval labels, eval split name)."""
    dataset = load_dataset(dataset_dir)
    train_images, _ = dataset.subset("train")
    for split in ("test", "val"):
        images, labels = dataset.subset(split)
        if len(images):
            if split != "test":
                log.warning("dataset has no test split; export accuracy is measured on %r", split)
            return train_images, images, labels, split
    raise ExportError(f"{dataset_dir}: no test or val samples to measure export accuracy on")


def _calibration_images(train_images: np.ndarray, count: int) -> np.ndarray:
    # A seeded random subset: the stored order is by content hash, but a subset should span all classes.
    if len(train_images) == 0:
        raise ExportError("the dataset has no training images to calibrate INT8 quantization with")
    rng = np.random.default_rng(CALIBRATION_SEED)
    chosen = rng.choice(len(train_images), size=min(count, len(train_images)), replace=False)
    return train_images[np.sort(chosen)]


def _preprocess(images: np.ndarray, info: ModelInfo) -> torch.Tensor:
    return to_model_input(images, info.input_size, info.mean, info.std, info.in_chans)


def _export_fp32(plan: Plan, model: torch.nn.Module, info: ModelInfo, eval_images: np.ndarray, path: Path) -> float:
    static = replace_conv2d_same(model, info.input_size, info.in_chans)
    export_onnx(static, info.input_size, info.in_chans, path)
    # Compare with the original model, so the padding replacement is verified too.
    diff = verify_onnx(model, path, _preprocess(eval_images[:VERIFY_SAMPLES], info))
    if not diff <= plan.export.max_abs_diff:  # `not <=` also catches NaN
        path.unlink()  # an unverified model must not look like an artifact
        raise ExportError(
            f"ONNX export does not match PyTorch: max |logit difference| {diff:.3g} > "
            f"export.max_abs_diff {plan.export.max_abs_diff:.3g} ({path.name})"
        )
    return diff


def _measure(
    plan: Plan,
    model: torch.nn.Module,
    info: ModelInfo,
    onnx_paths: dict[str, Path],
    images: np.ndarray,
    labels: np.ndarray,
    progress: Callable[[str], None],
) -> dict[str, float]:
    """Accuracy of each ONNX model on the eval split and batch-1 latency of each runtime."""
    spec = plan.export
    sample = _preprocess(images[:1], info)  # (1, C, S, S)
    metrics: dict[str, float] = {}
    progress("timing PyTorch eager FP32 at batch 1")
    metrics["latency_torch_fp32_ms"] = measure_latency(
        torch_runner(model), sample, spec.latency_runs, spec.latency_warmup
    ).median_ms
    for precision, path in onnx_paths.items():
        session = ort_session(path)
        progress(f"evaluating ONNX {precision.upper()} on {len(images)} images")
        metrics[f"{precision}_test_accuracy"] = onnx_accuracy(
            session, images, labels, info.input_size, info.mean, info.std, info.in_chans
        )
        progress(f"timing ONNX Runtime {precision.upper()} at batch 1")
        metrics[f"latency_ort_{precision}_ms"] = measure_latency(
            ort_runner(session), sample.numpy(), spec.latency_runs, spec.latency_warmup
        ).median_ms
        metrics[f"size_{precision}_mb"] = path.stat().st_size / 1e6
    if "int8" in onnx_paths:
        metrics["int8_accuracy_drop"] = metrics["fp32_test_accuracy"] - metrics["int8_test_accuracy"]
        metrics["speedup_int8_vs_torch"] = metrics["latency_torch_fp32_ms"] / metrics["latency_ort_int8_ms"]
    return metrics


def _report(
    plan: Plan,
    info: ModelInfo,
    metrics: dict[str, float],
    gates: list[dict[str, Any]],
    files: dict[str, Path],
    eval_split: str,
    dynamic_batch: bool,
    quantize_config: QuantizeConfig | None,
) -> dict[str, Any]:
    import onnx
    import onnxruntime

    return {
        "metrics": metrics,
        "gates": gates,
        "passed": all(gate["passed"] for gate in gates),
        "files": {
            name: {"sha256": storage.sha256_file(path), "bytes": path.stat().st_size} for name, path in files.items()
        },
        "input": {
            "shape": ["batch" if dynamic_batch else 1, info.in_chans, info.input_size, info.input_size],
            "dtype": "float32",
            "mean": list(info.mean),
            "std": list(info.std),
            "classes": info.classes,
        },
        "evaluation_split": eval_split,
        "formats": list(plan.export.formats),
        "opset": OPSET,
        "quantization": asdict(quantize_config) if quantize_config else None,
        "calibration_samples": plan.export.calibration_samples,
        "latency": {
            "batch_size": 1,
            "runs": plan.export.latency_runs,
            "warmup": plan.export.latency_warmup,
            "statistic": "median",
        },
        "environment": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "onnx": onnx.__version__,
            "cpu_threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "processor": platform.processor(),
        },
        "plan_digest": plan.digest(),
        "dataset_version": info.dataset_version,
    }


def export_model(
    plan: Plan,
    model_dir: str,
    dataset_dir: str,
    export_dir: str,
    progress: Callable[[str], None] | None = None,
    quantize_config: QuantizeConfig | None = None,
) -> ExportResult:
    """Export the trained model in `model_dir` to the plan's formats in `export_dir` and measure them.

    Raises ExportError when the FP32 ONNX logits differ from PyTorch's by more than
    `plan.export.max_abs_diff`, and GateFailure (after writing everything) when an export gate fails
    and `plan.export.fail_on_gate` is set.
    """
    say = progress or log.info
    model, info = load_trained_model(model_dir)
    train_images, eval_images, eval_labels, eval_split = _evaluation_split(dataset_dir)
    remote = storage.parse_uri(export_dir).is_s3
    # Local exports are written in place (atomic renames); remote ones are staged and uploaded.
    with tempfile.TemporaryDirectory(prefix="rooivalk-export-") as staging:
        out_dir = Path(staging) if remote else Path(storage.parse_uri(export_dir).key)
        out_dir.mkdir(parents=True, exist_ok=True)
        say(f"exporting {info.spec.architecture} to ONNX at {info.input_size}px")
        fp32_path = out_dir / FP32_FILE
        diff = _export_fp32(plan, model, info, eval_images, fp32_path)
        say(f"ONNX FP32 verified: max |logit diff| {diff:.2e}")
        onnx_paths = {"fp32": fp32_path}
        config = None
        if "onnx_int8" in plan.export.formats:
            config = quantize_config or QuantizeConfig()
            calibration = _calibration_images(train_images, plan.export.calibration_samples)
            say(f"quantizing to INT8 (static QDQ, {config.method}, {len(calibration)} calibration images)")
            onnx_paths["int8"] = quantize_int8(
                fp32_path, out_dir / INT8_FILE, calibration, info.input_size, info.mean, info.std, info.in_chans, config
            )
        dynamic_batch = onnx_input_info(fp32_path)[1]
        metrics = {"onnx_max_abs_diff": diff, **_measure(plan, model, info, onnx_paths, eval_images, eval_labels, say)}
        if "onnx" not in plan.export.formats:
            fp32_path.unlink()  # only the INT8 model was asked for; FP32 was its verified source
            del onnx_paths["fp32"]
        gates = check_gates(plan.export.gates, metrics, missing_fails=True)
        files = {path.name: path for path in onnx_paths.values()}
        report = _report(plan, info, metrics, gates, files, eval_split, dynamic_batch, config)
        artifacts: dict[str, str] = {}
        for name, path in files.items():
            artifacts[name] = f"{export_dir}/{name}" if remote else str(path)
            if remote:
                storage.write_bytes(artifacts[name], path.read_bytes())
        artifacts[REPORT_FILE] = f"{export_dir}/{REPORT_FILE}" if remote else str(out_dir / REPORT_FILE)
        storage.write_text(artifacts[REPORT_FILE], json.dumps(report, indent=2))
    say("export done: " + ", ".join(f"{key}={value:.4g}" for key, value in metrics.items()))
    result = ExportResult(metrics=metrics, artifacts=artifacts, gates=gates)
    if not result.passed and plan.export.fail_on_gate:
        raise GateFailure(f"export gates failed: {describe_failures(gates)} (report: {artifacts[REPORT_FILE]})")
    return result
