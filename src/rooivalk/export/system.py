"""Export of a multi-sensor system: one ONNX encoder per sensor plus the fusion model, FP32 and INT8.

What ships is what runs at the edge: each sensor's frozen encoder (samples -> embedding, the same
function the feature cache ran) and the fusion transformer (embeddings + presence mask -> logits).
Each FP32 file is checked against PyTorch on test samples; then the whole system is scored on the
test split through ONNX Runtime alone (encoders, then fusion), FP32 and INT8, so the accuracy cost of
INT8 is measured on the answer that matters, not per model.

INT8: the optical encoder (an image CNN) gets static QDQ quantization calibrated on training images
(rooivalk.export.quantize, measured on EfficientNet-Lite0); the other encoders and the fusion model
get dynamic quantization of MatMul/Gemm weights (no calibration; their convolutions stay FP32,
since ORT's dynamic ConvInteger is slower than FP32 on x86). INT8 ships per model "where the gate
allows": each model's INT8 is scored in the system alone, and models join the INT8 system from the
cheapest up while the plan's export gates pass on the whole (see _choose_int8); FP32 always ships.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rooivalk import storage
from rooivalk.data.dataset import SPLIT_CODES
from rooivalk.data.multisensor import MultiSensorDataset, load_multisensor
from rooivalk.evaluation.gates import GateFailure, check_gates, describe_failures
from rooivalk.export.benchmark import measure_latency, ort_session
from rooivalk.export.onnx_export import OPSET, replace_conv2d_same
from rooivalk.export.pipeline_step import ExportError
from rooivalk.export.quantize import QuantizeConfig, quantize_int8
from rooivalk.models.fusion import FusionTransformer
from rooivalk.plan import Plan
from rooivalk.training.sensors import SensorTrainResult

REPORT_FILE = "export_report.json"
FUSION = "fusion"
VERIFY_SAMPLES = 64
BATCH = 256


@dataclass
class SystemExportResult:
    metrics: dict[str, float]
    files: dict[str, str]  # "<model>/<file>" -> path or URI
    gates: list[dict[str, Any]] = field(default_factory=list)
    int8_shipped: bool = False


class _Encoder(nn.Module):
    """A sensor model's embedding function as a module: (B, ...) float32 -> (B, D)."""

    def __init__(self, model: nn.Module, embed: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model, self.embed = model, embed

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.embed(self.model, inputs)


class _Fusion(nn.Module):
    """The fusion model with positional inputs (ONNX has no dict inputs): one embedding per sensor, then the mask."""

    def __init__(self, model: FusionTransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *embeddings, present = inputs
        return self.model(dict(zip(self.model.sensors, embeddings, strict=True)), present)  # type: ignore[no-any-return]


def _onnx_export(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    names: list[str],
    output: str,
    path: Path,
    varargs: bool = False,
) -> None:
    """Dynamic-batch ONNX export (dynamo), written atomically. `varargs`: the module's forward takes
    `*inputs`, which torch.export sees as one argument holding a tuple."""
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    per_input = tuple({0: batch} for _ in example)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".onnx.tmp")
    os.close(fd)
    try:
        program = torch.onnx.export(
            module.eval(),
            example,
            dynamo=True,
            opset_version=OPSET,
            input_names=names,
            output_names=[output],
            dynamic_shapes=(per_input,) if varargs else per_input,
            optimize=True,
        )
        assert program is not None
        program.save(tmp, external_data=False)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _quantize_dynamic(fp32: Path, int8: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantizer re-runs ONNX shape inference in strict mode; the exporter's intermediate shape
    # annotations (value_info) can disagree with it (the CREPE framing: 514 vs 256) although ORT
    # runs the graph fine, so the annotations are dropped and inferred afresh.
    model = onnx.load(str(fp32))
    del model.graph.value_info[:]
    with tempfile.TemporaryDirectory(dir=int8.parent, prefix=".quantize-") as work:
        bare = Path(work) / "bare.onnx"
        onnx.save(model, str(bare))
        quantize_dynamic(str(bare), str(int8), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)


def _run(session: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Session outputs over `feeds` in batches of BATCH rows."""
    count = len(next(iter(feeds.values())))
    chunks = [
        session.run(None, {name: array[start : start + BATCH] for name, array in feeds.items()})[0]
        for start in range(0, count, BATCH)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0,), np.float32)


def _encoder_inputs(dataset: MultiSensorDataset, result: SensorTrainResult, rows: np.ndarray) -> np.ndarray:
    """Model inputs of the sensor's samples at `rows` (a mask or indices)."""
    return result.encoding.preprocess(dataset.arrays[result.name][rows]).astype(np.float32)


def export_system(
    plan: Plan,
    dataset_dir: str,
    sensors: dict[str, SensorTrainResult],
    fusion: FusionTransformer,
    export_dir: str,
    progress: Callable[[str], None] | None = None,
) -> SystemExportResult:
    """Export every encoder and the fusion model to `export_dir/<model>/model_{fp32,int8}.onnx`,
    verify FP32 against PyTorch, score the ONNX system FP32 and INT8 on the test split, time each
    model at batch 1, write export_report.json, and keep INT8 only where the plan's gates pass."""
    say = progress or (lambda _message: None)
    dataset = load_multisensor(dataset_dir)
    test = dataset.split_mask("test")
    remote = storage.parse_uri(export_dir).is_s3
    with tempfile.TemporaryDirectory(prefix="rooivalk-export-") as staging:
        out = Path(staging) if remote else Path(storage.parse_uri(export_dir).key)
        paths: dict[str, dict[str, Path]] = {}
        metrics: dict[str, float] = {}
        sessions: dict[str, dict[str, Any]] = {}
        for name, result in sensors.items():
            paths[name] = _export_encoder(plan, dataset, result, out / name, metrics, say)
        paths[FUSION] = _export_fusion(plan, dataset, sensors, fusion, out / FUSION, metrics, say)
        for precision in ("fp32", "int8"):
            sessions[precision] = {model: ort_session(files[precision]) for model, files in paths.items()}
            for model, session in sessions[precision].items():
                metrics[f"{model}_latency_{precision}_ms"] = _latency_ms(plan, session)
                metrics[f"{model}_size_{precision}_mb"] = paths[model][precision].stat().st_size / 1e6
        say(f"scoring the ONNX system on {int(test.sum())} test events, FP32 and per-model INT8")
        scorer = _SystemScorer(dataset, sensors, sessions, test)
        int8_models = _choose_int8(plan, scorer, list(paths), metrics) if "onnx_int8" in plan.export.formats else []
        metrics["system_fp32_test_accuracy"] = scorer.accuracy(set())
        metrics["system_all_int8_test_accuracy"] = scorer.accuracy(set(paths))
        metrics["system_int8_test_accuracy"] = scorer.accuracy(set(int8_models))
        metrics["int8_accuracy_drop"] = metrics["system_fp32_test_accuracy"] - metrics["system_int8_test_accuracy"]
        metrics["int8_models"] = float(len(int8_models))
        gates = check_gates(plan.export.gates, metrics, missing_fails=True)
        shipped = bool(int8_models) and all(gate["passed"] for gate in gates)
        for model, files in paths.items():
            if not shipped or model not in int8_models:
                files.pop("int8").unlink()
        say(
            f"INT8 ships for {', '.join(int8_models)} (system drop {metrics['int8_accuracy_drop']:+.4f})"
            if shipped
            else "INT8 left out: " + (describe_failures(gates) or "no model's INT8 passes the export gates")
        )
        report = {
            "metrics": metrics,
            "gates": gates,
            "int8_shipped": shipped,
            "int8_models": int8_models if shipped else [],
            "models": {model: {k: p.name for k, p in files.items()} for model, files in paths.items()},
            "inputs": {model: _io(sessions["fp32"][model]) for model in paths},
            "dataset_version": dataset.info.version_id,
            "plan_digest": plan.digest(),
            "opset": OPSET,
        }
        files_out: dict[str, str] = {}
        for model, files in paths.items():
            for path in files.values():
                key = f"{model}/{path.name}"
                files_out[key] = f"{export_dir}/{key}" if remote else str(path)
                if remote:
                    storage.write_bytes(files_out[key], path.read_bytes())
        files_out[REPORT_FILE] = f"{export_dir}/{REPORT_FILE}" if remote else str(out / REPORT_FILE)
        storage.write_text(files_out[REPORT_FILE], json.dumps(report, indent=2))
    exported = SystemExportResult(metrics, files_out, gates, shipped)
    if not all(gate["passed"] for gate in gates) and plan.export.fail_on_gate:
        raise GateFailure(f"export gates failed: {describe_failures(gates)} (report: {files_out[REPORT_FILE]})")
    return exported


def export_system_step(
    plan: Plan,
    dataset_dir: str,
    sensor_dirs: list[str],
    fusion_dir: str,
    export_dir: str,
    progress: Callable[[str], None] | None = None,
) -> SystemExportResult:
    """export_system on the artifacts of the pipeline's earlier steps."""
    from rooivalk.training.multisensor_artifacts import load_fusion_model
    from rooivalk.training.multisensor_steps import load_sensor_models

    sensors = load_sensor_models(sensor_dirs, load_multisensor(dataset_dir))
    fusion, _ = load_fusion_model(fusion_dir)
    return export_system(plan, dataset_dir, sensors, fusion, export_dir, progress)


def _latency_ms(plan: Plan, session: Any) -> float:
    """Median batch-1 latency of one session on zero inputs of its declared shapes."""
    sample = {i.name: np.zeros([1, *i.shape[1:]], _dtype(i.type)) for i in session.get_inputs()}

    def run(feeds: dict[str, np.ndarray]) -> Any:
        return session.run(None, feeds)

    return measure_latency(run, sample, plan.export.latency_runs, plan.export.latency_warmup).median_ms


def _dtype(onnx_type: str) -> Any:
    return bool if onnx_type == "tensor(bool)" else np.float32


def _io(session: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": i.name, "shape": i.shape, "type": i.type} for i in session.get_inputs()],
        "outputs": [{"name": o.name, "shape": o.shape, "type": o.type} for o in session.get_outputs()],
    }


def _export_encoder(
    plan: Plan,
    dataset: MultiSensorDataset,
    result: SensorTrainResult,
    folder: Path,
    metrics: dict[str, float],
    say: Callable[[str], None],
) -> dict[str, Path]:
    name = result.name
    rows = np.flatnonzero(dataset.present_of(name) & dataset.split_mask("test"))[:VERIFY_SAMPLES]
    inputs = _encoder_inputs(dataset, result, rows)  # the verification samples only: the scorer embeds the split
    model = result.model.eval()
    if result.encoding.preprocessing.get("kind") == "image":
        model = replace_conv2d_same(model, int(result.encoding.preprocessing["input_size"]), inputs.shape[1])
    encoder = _Encoder(model, result.encoding.embed)
    fp32 = folder / "model_fp32.onnx"
    say(f"exporting the {name} encoder to ONNX (input {list(inputs.shape[1:])})")
    try:
        _onnx_export(encoder, (torch.from_numpy(inputs[:2]),), ["samples"], "embedding", fp32)
    except Exception as error:  # noqa: BLE001  (report which model failed and why)
        raise ExportError(f"{name} encoder: ONNX export failed: {error}") from error
    metrics[f"{name}_onnx_max_rel_diff"] = _verify(encoder, fp32, [inputs], plan, name, True)
    int8 = folder / "model_int8.onnx"
    if result.encoding.preprocessing.get("kind") == "image":
        train_rows = dataset.present_of(name) & (dataset.splits == SPLIT_CODES["train"])
        images = dataset.arrays[name][train_rows][: plan.export.calibration_samples]
        images = images[..., None] if images.ndim == 3 else images
        pre = result.encoding.preprocessing
        say(f"quantizing the {name} encoder to INT8 (static QDQ, {len(images)} calibration images)")
        quantize_int8(fp32, int8, images, pre["input_size"], pre["mean"], pre["std"], pre["in_chans"], QuantizeConfig())
    else:
        say(f"quantizing the {name} encoder to INT8 (dynamic, MatMul/Gemm weights)")
        _quantize_dynamic(fp32, int8)
    return {"fp32": fp32, "int8": int8}


def _export_fusion(
    plan: Plan,
    dataset: MultiSensorDataset,
    sensors: dict[str, SensorTrainResult],
    fusion: FusionTransformer,
    folder: Path,
    metrics: dict[str, float],
    say: Callable[[str], None],
) -> dict[str, Path]:
    module = _Fusion(fusion.eval())
    dims = {name: fusion.project[name][1].in_features for name in fusion.sensors}  # type: ignore[index]
    rng = np.random.default_rng(0)
    example = [rng.standard_normal((VERIFY_SAMPLES, dims[name])).astype(np.float32) for name in fusion.sensors]
    present = rng.random((VERIFY_SAMPLES, len(fusion.sensors))) < 0.8
    present[:, 0] = True  # never an event without any sensor
    fp32 = folder / "model_fp32.onnx"
    say(f"exporting the fusion model to ONNX ({len(fusion.sensors)} embeddings + presence mask)")
    try:
        _onnx_export(
            module,
            (*(torch.from_numpy(e[:2]) for e in example), torch.from_numpy(present[:2])),
            [*fusion.sensors, "present"],
            "logits",
            fp32,
            varargs=True,
        )
    except Exception as error:  # noqa: BLE001
        raise ExportError(f"fusion: ONNX export failed: {error}") from error
    metrics["fusion_onnx_max_abs_diff"] = _verify(module, fp32, [*example, present], plan, FUSION, False)
    int8 = folder / "model_int8.onnx"
    say("quantizing the fusion model to INT8 (dynamic, MatMul/Gemm weights)")
    _quantize_dynamic(fp32, int8)
    return {"fp32": fp32, "int8": int8}


def _verify(module: nn.Module, path: Path, arrays: list[np.ndarray], plan: Plan, name: str, relative: bool) -> float:
    """Max |PyTorch - ONNX Runtime| over `arrays`; relative to the largest |PyTorch| value for
    encoders, whose embeddings are unnormalized (EfficientNet's 1280 pre-logits reach the tens),
    absolute for the fusion logits. Checked against export.max_abs_diff either way."""
    session = ort_session(path)
    with torch.inference_mode():
        expected = module.eval()(*(torch.from_numpy(a) for a in arrays)).float().numpy()
    got = _run(session, {i.name: a for i, a in zip(session.get_inputs(), arrays, strict=True)})
    diff = float(np.abs(expected - got).max())
    if relative:
        diff /= max(float(np.abs(expected).max()), 1e-12)
    if diff > plan.export.max_abs_diff:
        kind = "relative" if relative else "absolute"
        raise ExportError(
            f"{name}: ONNX FP32 differs from PyTorch by {diff:.2e} ({kind}) > export.max_abs_diff "
            f"{plan.export.max_abs_diff}"
        )
    return diff


class _SystemScorer:
    """Test accuracy of the system run through ONNX Runtime only (encoders, then fusion), for any
    choice of which models run INT8. Each encoder runs once per precision; a choice only re-runs the
    fusion model, so trying every model's INT8 alone costs milliseconds."""

    def __init__(
        self,
        dataset: MultiSensorDataset,
        sensors: dict[str, SensorTrainResult],
        sessions: dict[str, dict[str, Any]],
        rows: np.ndarray,
    ) -> None:
        self.sessions, self.sensors = sessions, list(sensors)
        self.labels, self.present = dataset.labels[rows], dataset.present[rows]
        dims = {i.name: int(i.shape[1]) for i in sessions["fp32"][FUSION].get_inputs()}
        self.embeddings: dict[tuple[str, str], np.ndarray] = {}
        for name, result in sensors.items():
            have = dataset.present_of(name)[rows]
            inputs = _encoder_inputs(dataset, result, rows & dataset.present_of(name)) if have.any() else None
            for precision, by_model in sessions.items():
                matrix = np.zeros((int(rows.sum()), dims[name]), np.float32)  # absent sensors: zeros, masked
                if inputs is not None:
                    matrix[have] = _run(by_model[name], {by_model[name].get_inputs()[0].name: inputs})
                self.embeddings[(name, precision)] = matrix

    def accuracy(self, int8: set[str]) -> float:
        def precision(model: str) -> str:
            return "int8" if model in int8 else "fp32"

        feeds = {name: self.embeddings[(name, precision(name))] for name in self.sensors}
        feeds["present"] = self.present
        logits = _run(self.sessions[precision(FUSION)][FUSION], feeds)
        return float((logits.argmax(1) == self.labels).mean())


def _choose_int8(plan: Plan, scorer: _SystemScorer, models: list[str], metrics: dict[str, float]) -> list[str]:
    """Models that run INT8: each model's INT8 is scored alone (the rest FP32), then models are added
    from the smallest accuracy cost up while the plan's export gates still pass on the whole system.
    A gate on `int8_accuracy_drop` thus keeps INT8 wherever it is nearly free and leaves out the
    model whose quantization hurts (measured: the radar SSM's dynamic INT8 alone costs 2.5 points)."""
    base = scorer.accuracy(set())
    for model in models:
        metrics[f"{model}_int8_accuracy_drop"] = base - scorer.accuracy({model})
    chosen: list[str] = []
    for model in sorted(models, key=lambda m: metrics[f"{m}_int8_accuracy_drop"]):
        accuracy = scorer.accuracy({*chosen, model})
        trial = {
            **metrics,
            "system_fp32_test_accuracy": base,
            "system_int8_test_accuracy": accuracy,
            "int8_accuracy_drop": base - accuracy,
        }
        if all(gate["passed"] for gate in check_gates(plan.export.gates, trial, missing_fails=True)):
            chosen.append(model)
    return chosen
