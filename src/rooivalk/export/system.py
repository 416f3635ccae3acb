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
from rooivalk.export.benchmark import LatencyStats, measure_latency, ort_session
from rooivalk.export.onnx_export import export_module, replace_conv2d_same, run_batched, verify_module
from rooivalk.export.selection import ModelExport, build_variants, score_variants
from rooivalk.export.shipping import (
    REPORT_FILE,
    CalibrationSource,
    EngineInputs,
    ExportError,
    budget_gates,
    build_engines,
    calibrate,
    calibration_source,
    environment,
    export_folders,
    output_location,
    prune_variants,
    publish_variants,
    raise_on_failed_gates,
    report_settings,
    require_targets,
    seeded_subset,
    ship_bundle,
    write_report,
)
from rooivalk.models.fusion_transformer import FusionTransformer
from rooivalk.models.sensor_artifacts import SensorTrainResult
from rooivalk.plan import Plan

log = logging.getLogger(__name__)

FUSION = "fusion"
SAMPLES, PRESENT = "samples", "present"
VERIFY_SAMPLES = 64


@dataclass
class SystemExportResult:
    metrics: dict[str, float]
    files: dict[str, str]  # "<folder>/<model>/<file>" -> path or URI
    gates: list[dict[str, Any]] = field(default_factory=list)
    shipped: dict[str, str] = field(default_factory=dict)  # model -> precision
    bundles: dict[str, str] = field(default_factory=dict)  # model -> bundle folder or URI


class _Encoder(nn.Module):
    """A sensor model as shipped: (B, ...) float32 -> (embedding (B, D), logits (B, K))."""

    def __init__(self, model: nn.Module, embed: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model, self.embed = model, embed
        self.classifier = model.get_classifier()  # type: ignore[operator]

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embed(self.model, inputs)
        return embedding, self.classifier(embedding)


class _Fusion(nn.Module):
    """The fusion model with positional inputs (ONNX has no dict inputs): one embedding per sensor, then the mask."""

    def __init__(self, model: FusionTransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *embeddings, present = inputs
        return self.model(dict(zip(self.model.sensors, embeddings, strict=True)), present)  # type: ignore[no-any-return]


def _latency(plan: Plan, run: Callable[[Any], Any], sample: Any) -> LatencyStats:
    return measure_latency(run, sample, plan.export.latency_runs, plan.export.latency_warmup)


@dataclass
class _Rows:
    """Row masks of the dataset the export uses."""

    test: np.ndarray
    val: np.ndarray
    calibration: np.ndarray
    source: CalibrationSource


def _rows(plan: Plan, dataset: MultiSensorDataset) -> _Rows:
    source = calibration_source(plan)
    chosen = np.flatnonzero(dataset.split_mask(source.split))
    subset = np.zeros(len(dataset.splits), bool)
    subset[chosen[seeded_subset(len(chosen), plan.export.quantization.samples)]] = True
    test = dataset.split_mask("test")
    if not test.any():
        raise ExportError("the dataset has no test split to score exported models on")
    return _Rows(test, dataset.split_mask("val"), subset, source)


class _SensorExport:
    """One sensor's FP32 export, variants and choice."""

    def __init__(self, plan: Plan, dataset: MultiSensorDataset, result: SensorTrainResult, folder: Path) -> None:
        self.plan, self.dataset, self.result, self.folder = plan, dataset, result, folder
        self.name = result.name

    def inputs(self, rows: np.ndarray) -> np.ndarray:
        """Model inputs (float32) of the sensor's present samples among `rows` (a mask)."""
        mask = rows & self.dataset.present_of(self.name)
        return self.result.encoding.preprocess(self.dataset.arrays[self.name][mask]).astype(np.float32)

    def labels(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.dataset.labels[rows & self.dataset.present_of(self.name)])

    def export(self, rows: _Rows, metrics: dict[str, float], say: Callable[[str], None]) -> ModelExport:
        name, result = self.name, self.result
        test_inputs = self.inputs(rows.test)
        model = result.model.eval()
        if result.encoding.preprocessing.get("kind") == "image":
            model = replace_conv2d_same(model, int(result.encoding.preprocessing["input_size"]), test_inputs.shape[1])
        encoder = _Encoder(model, result.encoding.embed)
        fp32 = self.folder / "model_fp32.onnx"
        say(f"exporting the {name} model to ONNX (input {list(test_inputs.shape[1:])})")
        try:
            export_module(encoder, (torch.from_numpy(test_inputs[:2]),), [SAMPLES], ["embedding", "logits"], fp32)
        except Exception as error:  # noqa: BLE001  (report which model failed and why)
            raise ExportError(f"{name}: ONNX export failed: {error}") from error
        # Against the original model (with its dynamic padding): the replacement is verified too.
        check = verify_module(
            _Encoder(result.model.eval(), result.encoding.embed), fp32, [test_inputs[:VERIFY_SAMPLES]]
        )
        # Relative: encoder embeddings are unnormalized (EfficientNet's 1280 pre-logits reach the tens).
        if not check.max_rel_diff <= self.plan.export.max_abs_diff:
            fp32.unlink()
            raise ExportError(
                f"{name}: ONNX FP32 differs from PyTorch by {check.max_rel_diff:.2e} (relative) > "
                f"export.max_abs_diff {self.plan.export.max_abs_diff}"
            )
        metrics[f"{name}_onnx_max_rel_diff"] = check.max_rel_diff
        metrics[f"{name}_onnx_max_abs_diff"] = check.max_abs_diff
        metrics[f"{name}_onnx_top1_agreement"] = float(check.top1_agreement or 0.0)
        spec = self.plan.export.for_model(name)
        calibration = {SAMPLES: self.inputs(rows.calibration)}
        paths, failures = build_variants(name, fp32, self.folder, spec, calibration, self.plan.export.quantization, say)
        sample = test_inputs[:1]

        def predict(session: Any) -> np.ndarray:
            return np.asarray(run_batched(session, {SAMPLES: test_inputs})[1].argmax(1))

        def time(session: Any) -> LatencyStats:
            return _latency(self.plan, lambda x: session.run(None, {SAMPLES: x}), sample)

        return score_variants(name, paths, failures, self.labels(rows.test), predict, time, spec, say)


class _SystemScorer:
    """Test accuracy of the system through ONNX Runtime only, for any choice of variant per model.
    Each encoder variant runs once over the rows (cached); a choice then only re-runs the fusion model."""

    def __init__(
        self, sensors: dict[str, _SensorExport], choices: dict[str, ModelExport], rows: np.ndarray, order: list[str]
    ) -> None:
        self.sensors, self.choices, self.rows = sensors, choices, rows
        dataset = next(iter(sensors.values())).dataset
        self.labels = dataset.labels[rows]
        # (N, S) in the fusion model's sensor order: the ONNX "present" input's columns.
        self.present = np.stack([dataset.present_of(name)[rows] for name in order], axis=1)
        self._embeddings: dict[tuple[str, str], np.ndarray] = {}
        self._sessions: dict[tuple[str, str], Any] = {}

    def session(self, model: str, precision: str) -> Any:
        key = (model, precision)
        if key not in self._sessions:
            self._sessions[key] = ort_session(self.choices[model].paths[precision])
        return self._sessions[key]

    def embeddings(self, sensor: str, precision: str) -> np.ndarray:
        key = (sensor, precision)
        if key not in self._embeddings:
            export = self.sensors[sensor]
            have = export.dataset.present_of(sensor)[self.rows]
            session = self.session(sensor, precision)
            out = run_batched(session, {SAMPLES: export.inputs(self.rows)})[0]
            dim = out.shape[1] if len(out) else int(session.getrun_batched()[0].shape[1])
            matrix = np.zeros((int(self.rows.sum()), dim), np.float32)  # absent sensors: zeros, masked
            matrix[have] = out
            self._embeddings[key] = matrix
        return self._embeddings[key]

    def feeds(self, precisions: dict[str, str]) -> dict[str, np.ndarray]:
        feeds = {name: self.embeddings(name, precisions.get(name, "fp32")) for name in self.sensors}
        return {**feeds, PRESENT: self.present}

    def logits(self, precisions: dict[str, str]) -> np.ndarray:
        return run_batched(self.session(FUSION, precisions.get(FUSION, "fp32")), self.feeds(precisions))[0]

    def accuracy(self, precisions: dict[str, str]) -> float:
        return float((self.logits(precisions).argmax(1) == self.labels).mean())


def _fusion_export(
    plan: Plan,
    source: CalibrationSource,
    fusion: FusionTransformer,
    scorers: dict[str, _SystemScorer],
    choices: dict[str, ModelExport],
    folder: Path,
    metrics: dict[str, float],
    say: Callable[[str], None],
) -> ModelExport:
    """Export, verify and score the fusion model on FP32 encoder embeddings of real samples."""
    module = _Fusion(fusion.eval())
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
    paths, failures = build_variants(FUSION, fp32, folder, spec, calibration, plan.export.quantization, say)
    sample = {name: array[:1] for name, array in test_feeds.items()}

    def predict(session: Any) -> np.ndarray:
        return np.asarray(run_batched(session, test_feeds)[0].argmax(1))

    def time(session: Any) -> LatencyStats:
        return _latency(plan, lambda feeds: session.run(None, feeds), sample)

    return score_variants(FUSION, paths, failures, test_scorer.labels, predict, time, spec, say)


def _fusion_calibration(
    plan: Plan, source: CalibrationSource, scorer: _SystemScorer, fp32: dict[str, str]
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


def _fall_back(plan: Plan, scorer: _SystemScorer, choices: dict[str, ModelExport], metrics: dict[str, float]) -> None:
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
    rows = _rows(plan, dataset)
    with export_folders(export_dir) as (out, scratch):
        metrics: dict[str, float] = {}
        exports = {name: _SensorExport(plan, dataset, r, out / "variants" / name) for name, r in sensors.items()}
        choices = {name: e.export(rows, metrics, say) for name, e in exports.items()}
        scorers = {
            split: _SystemScorer(exports, choices, getattr(rows, split), fusion.sensors)
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
    plan: Plan, scorer: _SystemScorer, exports: dict[str, _SensorExport], shipped: dict[str, str]
) -> LatencyStats:
    """Batch-1 latency of one event through every shipped encoder in turn, then fusion (sequential:
    an upper bound for an edge device that could run encoders concurrently)."""
    samples = {name: e.inputs(scorer.rows)[:1] for name, e in exports.items()}
    sessions = {name: scorer.session(name, precision) for name, precision in shipped.items()}
    present = np.ones((1, len(exports)), bool)  # every sensor observed: the slowest event

    def event(inputs: dict[str, np.ndarray]) -> Any:
        feeds = {name: sessions[name].run(None, {SAMPLES: x})[0] for name, x in inputs.items()}
        return sessions[FUSION].run(None, {**feeds, PRESENT: present})

    return _latency(plan, event, samples)


def _ship(
    plan: Plan,
    source: CalibrationSource,
    dataset: MultiSensorDataset,
    exports: dict[str, _SensorExport],
    choices: dict[str, ModelExport],
    scorers: dict[str, _SystemScorer],
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
    plan: Plan, source: CalibrationSource, scorers: dict[str, _SystemScorer], shipped: dict[str, str]
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


def _sensor_engine_inputs(export: _SensorExport, scorers: dict[str, _SystemScorer]) -> EngineInputs:
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
    from rooivalk.models.sensor_artifacts import load_fusion_model, load_sensor_models

    sensors = load_sensor_models(sensor_dirs, load_multisensor(dataset_dir))
    fusion, _ = load_fusion_model(fusion_dir)
    return export_system(plan, dataset_dir, sensors, fusion, export_dir, progress)
