"""Export of a multi-sensor system: one ONNX model per sensor plus the fusion model, each shipped in
the fastest precision within its tolerance, then the whole system checked end to end.

What ships is what runs at the edge: each sensor's frozen encoder with its own classifier head
(samples -> "embedding" (B, D) and "logits" (B, K): the embedding feeds fusion, the logits give the
per-model accuracy gate) and the fusion transformer (embeddings + presence mask -> logits).
Each FP32 file is checked against PyTorch on real test samples; every variant is scored on the
test split (sensors on their own labels, fusion on FP32 embeddings, so each model's gate measures
that model alone); then the system with the chosen variants is scored through ONNX Runtime alone,
and the plan's export gates (e.g. system_accuracy_drop) apply to it. When they fail, models go
back to FP32, largest own accuracy drop first, until they pass (quantization errors compound
through fusion, so per-model passes do not guarantee a system pass).
Layout: variants/<model>/model_<precision>.onnx, bundles/<model>/ (SystemPredictor loads bundles/),
export_report.json.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rooivalk.data.multisensor_dataset import MultiSensorDataset, load_multisensor
from rooivalk.evaluation.gates import check_gates
from rooivalk.export.benchmark import LatencyStats
from rooivalk.export.onnx_export import export_module, run_batched, verify_module
from rooivalk.export.selection import ModelExport, build_variants, score_variants
from rooivalk.export.sensor_export import SAMPLES, VERIFY_SAMPLES, SensorExport, export_rows, plan_latency
from rooivalk.export.shipping import (
    REPORT_FILE,
    CalibrationSource,
    EngineInputs,
    ExportError,
    budget_gates,
    build_engines,
    calibrate,
    environment,
    export_folders,
    output_location,
    prune_variants,
    publish_variants,
    raise_on_failed_gates,
    report_settings,
    require_targets,
    ship_bundle,
    write_report,
)
from rooivalk.export.system_scoring import FUSION, PRESENT, SystemScorer
from rooivalk.models.fusion_transformer import FusionTransformer
from rooivalk.models.sensor_artifacts import SensorTrainResult
from rooivalk.plan import Plan

log = logging.getLogger(__name__)


@dataclass
class SystemExportResult:
    metrics: dict[str, float]
    files: dict[str, str]  # "<folder>/<model>/<file>" -> path or URI
    gates: list[dict[str, Any]] = field(default_factory=list)
    shipped: dict[str, str] = field(default_factory=dict)  # model -> precision
    bundles: dict[str, str] = field(default_factory=dict)  # model -> bundle folder or URI


class ShippedFusion(nn.Module):
    """The fusion model with positional inputs (ONNX has no dict inputs): one embedding per sensor, then the mask."""

    def __init__(self, model: FusionTransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *embeddings, present = inputs
        return self.model(dict(zip(self.model.sensors, embeddings, strict=True)), present)  # type: ignore[no-any-return]


def _fusion_export(
    plan: Plan,
    source: CalibrationSource,
    fusion: FusionTransformer,
    scorers: dict[str, SystemScorer],
    choices: dict[str, ModelExport],
    folder: Path,
    metrics: dict[str, float],
    say: Callable[[str], None],
) -> ModelExport:
    """Export, verify and score the fusion model on FP32 encoder embeddings of real samples."""
    module = ShippedFusion(fusion.eval())
    test_scorer, calibration_scorer = scorers["test"], scorers["calibration"]
    fp32_inputs = {name: "fp32" for name in choices}
    test_feeds = test_scorer.feeds(fp32_inputs)
    ordered = [test_feeds[name] for name in fusion.sensors] + [test_feeds[PRESENT]]
    fp32 = folder / "model_fp32.onnx"
    say(f"exporting the fusion model to ONNX ({len(fusion.sensors)} embeddings + presence mask)")
    try:
        example = tuple(torch.from_numpy(a[:2]) for a in ordered)
        export_module(module, example, [*fusion.sensors, PRESENT], ["logits"], fp32, varargs=True)
    except Exception as error:  # noqa: BLE001
        raise ExportError(f"fusion: ONNX export failed: {error}") from error
    check = verify_module(module, fp32, [a[:VERIFY_SAMPLES] for a in ordered])
    if not check.max_abs_diff <= plan.export.max_abs_diff:
        fp32.unlink()
        raise ExportError(
            f"fusion: ONNX FP32 differs from PyTorch by {check.max_abs_diff:.2e} > export.max_abs_diff "
            f"{plan.export.max_abs_diff}"
        )
    metrics["fusion_onnx_max_abs_diff"] = check.max_abs_diff
    metrics["fusion_onnx_top1_agreement"] = float(check.top1_agreement or 0.0)
    spec = plan.export.for_model(FUSION)
    calibration = _fusion_calibration(plan, source, calibration_scorer, fp32_inputs)
    paths, failures = build_variants(
        FUSION,
        fp32,
        folder,
        spec,
        calibration,
        plan.export.quantization,
        say,
        qat=plan.fusion is not None and plan.fusion.training.qat is not None,
    )
    sample = {name: array[:1] for name, array in test_feeds.items()}

    def predict(session: Any) -> np.ndarray:
        return np.asarray(run_batched(session, test_feeds)[0].argmax(1))

    def time(session: Any) -> LatencyStats:
        return plan_latency(plan, lambda feeds: session.run(None, feeds), sample)

    return score_variants(FUSION, paths, failures, test_scorer.labels, predict, time, spec, say)


def _fusion_calibration(
    plan: Plan, source: CalibrationSource, scorer: SystemScorer, fp32: dict[str, str]
) -> dict[str, np.ndarray]:
    """Fusion inputs to calibrate static INT8 on: FP32 embeddings of the calibration rows, or with
    quantization.source reference, the embeddings the monitoring reference profile stores."""
    if source.profile is None:
        return scorer.feeds(fp32)
    frame, info = source.profile
    feeds: dict[str, np.ndarray] = {}
    for sensor in scorer.sensors:
        columns = info.embeddings.get(sensor)
        if not columns:
            raise ExportError(f"{plan.monitoring.reference_uri}: the reference profile has no {sensor} embeddings")
        feeds[sensor] = frame[columns].to_numpy(np.float32)
    present = [frame[f"{s}_present"].to_numpy(bool) for s in scorer.sensors]
    return {**feeds, PRESENT: np.stack(present, axis=1)}


def _fall_back(plan: Plan, scorer: SystemScorer, choices: dict[str, ModelExport], metrics: dict[str, float]) -> None:
    """Return models to FP32, largest own accuracy drop first, until the plan's export gates pass."""
    base = scorer.accuracy({})
    order = sorted(choices.values(), key=lambda c: -(c.shipped.accuracy_drop or 0.0))
    for choice in [None, *order]:
        if choice is not None:
            if choice.chosen == "fp32":
                continue
            choice.fall_back_to_fp32("the system's export gates failed with it")
        accuracy = scorer.accuracy({name: c.chosen for name, c in choices.items()})
        trial = {
            **metrics,
            "system_fp32_test_accuracy": base,
            "system_test_accuracy": accuracy,
            "system_accuracy_drop": base - accuracy,
        }
        if all(gate["passed"] for gate in check_gates(plan.export.gates, trial, missing_fails=True)):
            break
    metrics.update(trial)


def export_system(
    plan: Plan,
    dataset_dir: str,
    sensors: dict[str, SensorTrainResult],
    fusion: FusionTransformer,
    export_dir: str,
    progress: Callable[[str], None] | None = None,
) -> SystemExportResult:
    """Export every sensor model and the fusion model, ship each one's best variant in a bundle,
    score and time the whole system, and write export_report.json."""
    say = progress or (lambda _message: None)
    require_targets(plan)
    dataset = load_multisensor(dataset_dir)
    rows = export_rows(plan, dataset)
    with export_folders(export_dir) as (out, scratch):
        metrics: dict[str, float] = {}
        exports = {name: SensorExport(plan, dataset, r, out / "variants" / name) for name, r in sensors.items()}
        choices = {name: e.export(rows, metrics, say) for name, e in exports.items()}
        scorers = {
            split: SystemScorer(exports, choices, getattr(rows, split), fusion.sensors)
            for split in ("test", "val", "calibration")
        }
        fusion_dir = out / "variants" / FUSION
        choices[FUSION] = _fusion_export(plan, rows.source, fusion, scorers, choices, fusion_dir, metrics, say)
        for choice in choices.values():
            metrics.update(choice.metrics())
        say(f"scoring the ONNX system on {int(rows.test.sum())} test events with the chosen variants")
        _fall_back(plan, scorers["test"], choices, metrics)
        shipped = {name: c.chosen for name, c in choices.items()}
        end_to_end = _end_to_end_latency(plan, scorers["test"], exports, shipped)
        metrics["end_to_end_latency_ms"], metrics["end_to_end_latency_p95_ms"] = end_to_end.median_ms, end_to_end.p95_ms
        files = _ship(plan, rows.source, dataset, exports, choices, scorers, out, export_dir, scratch, say)
        metrics.update({key: value for c in choices.values() for key, value in c.metrics().items()})
        gates = check_gates(plan.export.gates, metrics, missing_fails=True)
        gates += budget_gates(plan, list(choices.values()), end_to_end.p95_ms)
        report = {
            "metrics": metrics,
            "gates": gates,
            "passed": all(gate["passed"] for gate in gates),
            "shipped": shipped,
            "models": {name: c.report() for name, c in choices.items()},
            **report_settings(plan, rows.source),
            "dataset_version": dataset.info.version_id,
        }
        files[REPORT_FILE] = write_report(out, export_dir, report)
    say("shipped: " + ", ".join(f"{name} {precision}" for name, precision in shipped.items()))
    bundles = {name: output_location(out, export_dir, f"bundles/{name}") for name in shipped}
    result = SystemExportResult(metrics, files, gates, shipped, bundles)
    raise_on_failed_gates(plan, gates, files[REPORT_FILE])
    return result


def _end_to_end_latency(
    plan: Plan, scorer: SystemScorer, exports: dict[str, SensorExport], shipped: dict[str, str]
) -> LatencyStats:
    """Batch-1 latency of one event through every shipped encoder in turn, then fusion (sequential:
    an upper bound for an edge device that could run encoders concurrently)."""
    samples = {name: e.inputs(scorer.rows)[:1] for name, e in exports.items()}
    sessions = {name: scorer.session(name, precision) for name, precision in shipped.items()}
    present = np.ones((1, len(exports)), bool)  # every sensor observed: the slowest event

    def event(inputs: dict[str, np.ndarray]) -> Any:
        feeds = {name: sessions[name].run(None, {SAMPLES: x})[0] for name, x in inputs.items()}
        return sessions[FUSION].run(None, {**feeds, PRESENT: present})

    return plan_latency(plan, event, samples)


def _ship(
    plan: Plan,
    source: CalibrationSource,
    dataset: MultiSensorDataset,
    exports: dict[str, SensorExport],
    choices: dict[str, ModelExport],
    scorers: dict[str, SystemScorer],
    out: Path,
    export_dir: str,
    scratch: Path,
    say: Callable[[str], None],
) -> dict[str, str]:
    """Temperature, engines and a bundle per model; the unshipped variants are pruned."""
    shipped = {name: c.chosen for name, c in choices.items()}
    val = scorers["val"]
    metadata = {"plan_digest": plan.digest(), "dataset_version": dataset.info.version_id, **environment()}
    files: dict[str, str] = {}
    for name, choice in choices.items():
        extra_dir = scratch / "bundle-files" / name
        extra_dir.mkdir(parents=True)
        session = val.session(name, choice.chosen)
        if name == FUSION:
            feeds = val.feeds(shipped)
            logits, labels = run_batched(session, feeds)[0], val.labels
            engine_inputs = partial(_fusion_engine_inputs, plan, source, scorers, shipped)
            preprocessing: dict[str, Any] = {
                "kind": "embeddings",
                "sensors": list(exports),
                "dims": {s: int(feeds[s].shape[1]) for s in exports},
            }
        else:
            export = exports[name]
            logits, labels = run_batched(session, {SAMPLES: export.inputs(val.rows)})[1], export.labels(val.rows)

            engine_inputs = partial(_sensor_engine_inputs, export, scorers)
            preprocessing = dict(export.result.encoding.preprocessing)
        temperature, extra = calibrate(plan, choice, logits, labels, extra_dir, say)
        extra |= build_engines(plan, choice, extra_dir, engine_inputs, say)
        prune_variants(choice)
        uri = output_location(out, export_dir, f"bundles/{name}")
        embedding = None if name == FUSION else "embedding"
        written = ship_bundle(uri, choice, dataset.info.classes, preprocessing, temperature, metadata, extra, embedding)
        files.update({f"bundles/{name}/{key}": value for key, value in written.items()})
        files |= publish_variants(out, name, export_dir)
    return files


def _fusion_engine_inputs(
    plan: Plan, source: CalibrationSource, scorers: dict[str, SystemScorer], shipped: dict[str, str]
) -> EngineInputs:
    """TensorRT inputs of the fusion model: scored on FP32 embeddings, like its ONNX variants."""
    test = scorers["test"]
    fp32 = {sensor: "fp32" for sensor in test.sensors}
    return EngineInputs(
        sample={key: array[:1] for key, array in test.feeds(shipped).items()},
        calibration=_fusion_calibration(plan, source, scorers["calibration"], fp32),
        test=test.feeds(fp32),
        labels=test.labels,
    )


def _sensor_engine_inputs(export: SensorExport, scorers: dict[str, SystemScorer]) -> EngineInputs:
    test_inputs = export.inputs(scorers["test"].rows)
    return EngineInputs(
        sample={SAMPLES: test_inputs[:1]},
        calibration={SAMPLES: export.inputs(scorers["calibration"].rows)},
        test={SAMPLES: test_inputs},
        labels=export.labels(scorers["test"].rows),
    )


def export_system_step(
    plan: Plan,
    dataset_dir: str,
    sensor_dirs: list[str],
    fusion_dir: str,
    export_dir: str,
    progress: Callable[[str], None] | None = None,
) -> SystemExportResult:
    """export_system on the artifacts of the pipeline's earlier steps."""
    from rooivalk.models.fusion_artifacts import load_fusion_model
    from rooivalk.models.sensor_artifacts import load_sensor_models

    sensors = load_sensor_models(sensor_dirs, load_multisensor(dataset_dir))
    fusion, _ = load_fusion_model(fusion_dir)
    return export_system(plan, dataset_dir, sensors, fusion, export_dir, progress)
