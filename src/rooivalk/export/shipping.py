"""What every export ends with, for one model or a whole system: temperature, engines, bundle, budgets.

Shared by the single-model step (pipeline_step) and the multi-sensor step (system) so a bundle,
a calibration or a budget means the same thing whichever plan made it.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rooivalk import storage
from rooivalk.evaluation.gates import GateFailure, describe_failures
from rooivalk.export.bundle import BundleInfo, bundle_format, write_bundle
from rooivalk.export.onnx_export import OPSET
from rooivalk.export.selection import ACCURACY, ModelExport
from rooivalk.export.temperature import fit_temperature, reliability_diagram
from rooivalk.plan import Plan

log = logging.getLogger(__name__)

RELIABILITY_FILE = "reliability.png"
ENGINE_FILE = "model.engine"
MIN_CALIBRATION_SAMPLES = 20


class ExportError(ValueError):
    """The exported model does not reproduce the PyTorch model (or cannot be built)."""


CALIBRATION_SEED = 0


@dataclass(frozen=True)
class CalibrationSource:
    """Where static INT8 calibrates: a dataset split, and with `source: reference` the reference
    profile itself (loaded once: the fusion model calibrates on the embeddings it stores)."""

    split: str
    profile: Any = None  # (pandas frame, ProfileInfo) of the monitoring reference, or None


def calibration_source(plan: Plan) -> CalibrationSource:
    """The training split, or the split the monitoring reference profiles (with the profile)."""
    if plan.export.quantization.source == "train":
        return CalibrationSource("train")
    from rooivalk.evaluation.profile import load_profile

    uri = plan.monitoring.reference_uri
    if not uri:
        raise ExportError("export.quantization.source is reference, but monitoring.reference_uri is not set")
    frame, info = load_profile(uri)
    return CalibrationSource(info.split, (frame, info))


def seeded_subset(size: int, count: int) -> np.ndarray:
    """Sorted indices of a seeded random `count` of `size` rows: stored order is by content hash, and a
    calibration subset should span all classes."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    return np.sort(rng.choice(size, size=min(count, size), replace=False))


def environment() -> dict[str, Any]:
    """Versions and the device the latencies were measured on."""
    import platform

    import onnx
    import onnxruntime
    import torch

    return {
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def report_settings(plan: Plan, calibration: CalibrationSource) -> dict[str, Any]:
    """The export report's fields that describe how it was measured (shared by both steps)."""
    return {
        "calibration_split": calibration.split,
        "quantization": plan.export.quantization.model_dump(),
        "targets": list(plan.export.targets),
        "opset": OPSET,
        "latency": {"batch_size": 1, "runs": plan.export.latency_runs, "warmup": plan.export.latency_warmup},
        "environment": environment(),
        "plan_digest": plan.digest(),
    }


REPORT_FILE = "export_report.json"


class ExportFolders(NamedTuple):
    out: Path  # what the export writes: the local export folder itself, or a staging copy of a remote one
    scratch: Path  # temporary: files made on the way (diagrams, engines) before they are copied into a bundle


@contextmanager
def export_folders(export_dir: str) -> Iterator[ExportFolders]:
    """Local exports are written in place (atomic renames); remote ones are staged in a temporary
    folder and uploaded file by file (publish_variants, ship_bundle, write_report)."""
    with tempfile.TemporaryDirectory(prefix="rooivalk-export-") as staging:
        uri = storage.parse_uri(export_dir)
        yield ExportFolders(Path(staging) if uri.is_s3 else Path(uri.key), Path(staging))


def output_location(out: Path, export_dir: str, key: str) -> str:
    """Where `key` of an export lands: its URI under a remote `export_dir` (staged in `out`, then
    uploaded), else its path in `out`, which is the local export folder itself."""
    return f"{export_dir}/{key}" if storage.parse_uri(export_dir).is_s3 else str(out / key)


def publish_variants(out: Path, name: str, export_dir: str) -> dict[str, str]:
    """{"variants/<name>/<file>": path or URI} of the variant files kept, uploaded when `export_dir` is remote."""
    remote = storage.parse_uri(export_dir).is_s3
    files: dict[str, str] = {}
    for path in sorted((out / "variants" / name).glob("*.onnx")):
        key = f"variants/{name}/{path.name}"
        files[key] = output_location(out, export_dir, key)
        if remote:
            storage.write_bytes(files[key], path.read_bytes())
    return files


def write_report(out: Path, export_dir: str, report: dict[str, Any]) -> str:
    """Write the export report (local or remote) and return where it went."""
    uri = output_location(out, export_dir, REPORT_FILE)
    storage.write_text(uri, json.dumps(report, indent=2))
    return uri


def raise_on_failed_gates(plan: Plan, gates: list[dict[str, Any]], report_uri: str) -> None:
    """The plan's `export.fail_on_gate`: a failed gate stops the step, naming the gates and the report."""
    if plan.export.fail_on_gate and not all(gate["passed"] for gate in gates):
        raise GateFailure(f"export gates failed: {describe_failures(gates)} (report: {report_uri})")


def require_targets(plan: Plan) -> None:
    """Fail before any work when a target cannot be built on this node (TensorRT needs a GPU node)."""
    if "tensorrt" not in plan.export.targets:
        return
    from rooivalk.export.tensorrt import tensorrt_available

    ok, why = tensorrt_available()
    if not ok:
        raise ExportError(
            f"export.targets includes tensorrt, but {why}: run the export step on a GPU node "
            "(cluster.steps.export with gpus) or remove tensorrt from export.targets"
        )


def calibrate(
    plan: Plan, choice: ModelExport, logits: np.ndarray, labels: np.ndarray, folder: Path, say: Callable[[str], None]
) -> tuple[float, dict[str, Path]]:
    """Fit the softmax temperature of the shipped variant on validation logits (N, K).

    Returns (temperature, extra bundle files). Without validation samples or with temperature
    scaling off, the temperature is 1 and no diagram is drawn.
    """
    if plan.export.temperature_scaling is False or len(labels) == 0:  # null: on (a classifier)
        return 1.0, {}
    if len(labels) < MIN_CALIBRATION_SAMPLES or bool((logits.argmax(1) == labels).all()):
        # With every validation answer right the NLL keeps falling as T -> 0: the fit would make every
        # confidence ~1.0, which is no calibration. A handful of samples is no better evidence.
        say(f"{choice.name}: temperature left at 1 ({len(labels)} validation samples, all or too few to fit on)")
        return 1.0, {}
    fit = fit_temperature(logits, labels)
    choice.measured = {
        "temperature": fit.temperature,
        "ece_before": fit.ece_before,
        "ece_after": fit.ece_after,
        "nll_before": fit.nll_before,
        "nll_after": fit.nll_after,
    }
    png = reliability_diagram(
        logits, labels, fit.temperature, folder / RELIABILITY_FILE, f"{choice.name} ({choice.chosen}), validation"
    )
    say(f"{choice.name}: temperature {fit.temperature:.3f}, ECE {fit.ece_before:.4f} -> {fit.ece_after:.4f}")
    return fit.temperature, {RELIABILITY_FILE: png}


EngineRun = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
"""Runs one engine on model-ready inputs by name (any number of rows: see `in_batches`); its outputs by name."""


@dataclass
class EngineInputs:
    """What the TensorRT engines are built, scored and timed with (model-ready arrays by input name).

    A classifier gives `test` and `labels`: an engine scores the accuracy of its "logits" argmax. Any
    other model gives `score`: given an EngineRun of the engine it returns the engine's test score, on
    the scale of the FP32 ONNX variant's (`choice.scores["fp32"].test_accuracy`), named `metric` in the
    tensorrt_<precision>_test_<metric> and _<metric>_drop metrics (a detector: "map50").
    """

    sample: dict[str, np.ndarray]  # batch 1, for latency
    calibration: dict[str, np.ndarray]  # for the TensorRT-flavoured static INT8 QDQ
    test: dict[str, np.ndarray] = field(default_factory=dict)  # the test split, scored against `labels`
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    score: Callable[[EngineRun], float] | None = None  # None: accuracy of test's "logits" against labels
    metric: str = ACCURACY


def in_batches(run: EngineRun, max_batch: int) -> EngineRun:
    """`run` on consecutive slices of at most `max_batch` rows (an engine's profile ends there), each
    output concatenated back along axis 0: the caller may pass any number of rows (>= 1)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")

    def batched(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = len(next(iter(feeds.values()))) if feeds else 0
        if not count:
            raise ValueError("an engine run needs at least one row of every input")
        parts = [
            run({k: v[start : start + max_batch] for k, v in feeds.items()}) for start in range(0, count, max_batch)
        ]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    return batched


def _accuracy(inputs: EngineInputs) -> Callable[[EngineRun], float]:
    """A classifier engine's test accuracy: argmax of its "logits" against `inputs.labels` (0 without labels)."""

    def score(run: EngineRun) -> float:
        if not len(inputs.labels):
            return 0.0
        return float((run(inputs.test)["logits"].argmax(1) == inputs.labels).mean())

    return score


def build_engines(
    plan: Plan, choice: ModelExport, folder: Path, engine_inputs: Callable[[], EngineInputs], say: Callable[[str], None]
) -> dict[str, Path]:
    """TensorRT engines, each gated like an ONNX variant; the fastest engine within tolerance ships.

    FP16 engines come from the verified FP32 ONNX; INT8 engines from a static QDQ model in the flavour
    TensorRT's explicit quantization takes (symmetric INT8, zero points 0, FP32 biases: TENSORRT_QDQ),
    calibrated on the same samples as the ONNX variant. Each engine is scored on the test split (by
    `inputs.score`, else by accuracy), run in slices of at most tensorrt.max_batch rows (`in_batches`):
    its drop of that score against the FP32 ONNX file's must be within the model's tolerance. Returns
    the bundle's extra files: model.engine and its JSON sidecar (TensorRT/CUDA versions, GPU, input shapes).
    """
    if "tensorrt" not in plan.export.targets:
        return {}
    import rooivalk.export.tensorrt as tensorrt  # the module: tests replace its functions where no GPU is
    from rooivalk.export.quantize import TENSORRT_QDQ, quantize_static_int8

    inputs = engine_inputs()  # only now: the test split's model inputs can be large
    settings = plan.export.tensorrt
    metric, scorer = inputs.metric, inputs.score or _accuracy(inputs)
    base = float(choice.scores["fp32"].test_accuracy or 0.0)
    best: tuple[float, Path] | None = None
    for precision in settings.precisions:
        source = choice.paths["fp32"]
        if precision == "int8":
            source = quantize_static_int8(source, folder / "model_int8_tensorrt.onnx", inputs.calibration, TENSORRT_QDQ)
        engine = folder / f"model_{precision}.engine"
        say(f"{choice.name}: building the TensorRT {precision} engine from {source.name}")
        tensorrt.build_engine(
            source, engine, precision, max_batch=settings.max_batch, workspace_mb=settings.workspace_mb
        )
        value = float(scorer(in_batches(partial(tensorrt.engine_outputs, engine), settings.max_batch)))
        latency = tensorrt.engine_latency(engine, inputs.sample, plan.export.latency_runs, plan.export.latency_warmup)
        key = f"tensorrt_{precision}"
        choice.measured |= {
            f"{key}_test_{metric}": value,
            f"{key}_{metric}_drop": base - value,
            f"{key}_latency_ms": float(latency["median_ms"]),
            f"{key}_latency_p95_ms": float(latency["p95_ms"]),
        }
        if base - value > choice.tolerance + 1e-12:
            drop = 100 * (base - value)
            say(f"{choice.name}: TensorRT {precision} engine not shipped: {metric} drop {drop:.2f} pt")
            continue
        if best is None or latency["median_ms"] < best[0]:
            best = (float(latency["median_ms"]), engine)
    if best is None:
        return {}
    engine = best[1]
    shipped = engine.stem.removeprefix("model_")
    choice.measured["tensorrt_latency_ms"] = choice.measured[f"tensorrt_{shipped}_latency_ms"]
    choice.measured["tensorrt_latency_p95_ms"] = choice.measured[f"tensorrt_{shipped}_latency_p95_ms"]
    return {ENGINE_FILE: engine, f"{ENGINE_FILE}.json": Path(f"{engine}.json")}


def ship_bundle(
    uri: str,
    choice: ModelExport,
    labels: list[str],
    preprocessing: dict[str, Any],
    temperature: float,
    metadata: dict[str, Any],
    extra_files: dict[str, Path],
    embedding_output: str | None = None,
    logits_output: str = "logits",
) -> dict[str, str]:
    """Write the deployment bundle of the shipped variant to `uri` (bundle.json last); `logits_output`:
    the output whose last axis holds the classes (a detector's is "scores")."""
    import onnx

    graph = onnx.load(str(choice.paths[choice.chosen]), load_external_data=False).graph

    def io(values: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": v.name,
                "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
                "type": onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower(),
            }
            for v in values
        ]

    info = BundleInfo(
        format_version=bundle_format(preprocessing),
        name=choice.name,
        precision=choice.chosen,
        labels=labels,
        preprocessing=preprocessing,
        temperature=temperature,
        inputs=io(graph.input),
        outputs=io(graph.output),
        logits_output=logits_output,
        embedding_output=embedding_output,
        files={},
        metrics={k: v for k, v in choice.metrics().items() if np.isfinite(v)},
        metadata={**metadata, "opset": OPSET, "shipped": choice.chosen},
    )
    return write_bundle(uri, info, choice.paths[choice.chosen], extra_files)


def budget_gates(plan: Plan, choices: list[ModelExport], end_to_end_p95_ms: float | None) -> list[dict[str, Any]]:
    """Pass/fail per latency budget: each model's p95 and the whole system's."""
    gates = [gate for gate in (c.budget_gate() for c in choices) if gate is not None]
    budget = plan.export.end_to_end_budget_ms
    if budget is not None:
        passed = end_to_end_p95_ms is not None and end_to_end_p95_ms <= budget
        gates.append(
            {
                "metric": "end_to_end_latency_p95_ms",
                "value": end_to_end_p95_ms,
                "min": None,
                "max": budget,
                "passed": passed,
            }
        )
    return gates


def prune_variants(choice: ModelExport) -> None:
    """Delete variant files that do not ship (FP32 always stays: it is the verified source)."""
    keep = {"fp32", choice.chosen}
    for precision, path in list(choice.paths.items()):
        if precision not in keep:
            path.unlink(missing_ok=True)
            del choice.paths[precision]


def single_model_metrics(check: Any, choice: ModelExport, torch_fp32_ms: float) -> dict[str, float]:
    """The export metrics of a single-model plan: the FP32 check (`check`: an onnx_export.Verification),
    every variant's scores, the PyTorch baseline, and the `system_*` / `end_to_end_*` names a multi-sensor
    plan's export reports, since a single model is the whole system (one gate fits both)."""
    shipped = choice.shipped
    return {
        "onnx_max_abs_diff": check.max_abs_diff,
        "onnx_top1_agreement": float(check.top1_agreement or 0.0),
        **choice.metrics(),
        "latency_torch_fp32_ms": torch_fp32_ms,
        "speedup_vs_torch": torch_fp32_ms / float(shipped.latency_ms or np.inf),
        "system_fp32_test_accuracy": float(choice.scores["fp32"].test_accuracy or 0.0),
        "system_test_accuracy": float(shipped.test_accuracy or 0.0),
        "system_accuracy_drop": float(shipped.accuracy_drop or 0.0),
        "end_to_end_latency_ms": float(shipped.latency_ms or 0.0),
        "end_to_end_latency_p95_ms": float(shipped.latency_p95_ms or 0.0),
    }
