"""One sensor model of a multi-sensor system as it ships: the frozen encoder with its own classifier
head (samples -> "embedding" (B, D) and "logits" (B, K)), exported to ONNX, verified against PyTorch
on real test samples, then built and scored in every candidate precision (rooivalk.export.system)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rooivalk.data.multisensor_dataset import MultiSensorDataset
from rooivalk.export.benchmark import LatencyStats, measure_latency
from rooivalk.export.onnx_export import export_module, replace_conv2d_same, run_batched, verify_module
from rooivalk.export.selection import ModelExport, build_variants, score_variants
from rooivalk.export.shipping import CalibrationSource, ExportError, calibration_source, seeded_subset
from rooivalk.models.sensor_artifacts import SensorTrainResult
from rooivalk.plan import Plan

SAMPLES = "samples"  # the ONNX input name of every sensor model
VERIFY_SAMPLES = 64  # test samples each FP32 file is checked on against PyTorch


class ShippedEncoder(nn.Module):
    """A sensor model as shipped: (B, ...) float32 -> (embedding (B, D), logits (B, K))."""

    def __init__(self, model: nn.Module, embed: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model, self.embed = model, embed
        self.classifier = model.get_classifier()  # type: ignore[operator]

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embed(self.model, inputs)
        return embedding, self.classifier(embedding)


def plan_latency(plan: Plan, run: Callable[[Any], Any], sample: Any) -> LatencyStats:
    return measure_latency(run, sample, plan.export.latency_runs, plan.export.latency_warmup)


@dataclass
class ExportRows:
    """Row masks of the dataset the export uses."""

    test: np.ndarray
    val: np.ndarray
    calibration: np.ndarray
    source: CalibrationSource


def export_rows(plan: Plan, dataset: MultiSensorDataset) -> ExportRows:
    source = calibration_source(plan)
    chosen = np.flatnonzero(dataset.split_mask(source.split))
    subset = np.zeros(len(dataset.splits), bool)
    subset[chosen[seeded_subset(len(chosen), plan.export.quantization.samples)]] = True
    test = dataset.split_mask("test")
    if not test.any():
        raise ExportError("the dataset has no test split to score exported models on")
    return ExportRows(test, dataset.split_mask("val"), subset, source)


class SensorExport:
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

    def export(self, rows: ExportRows, metrics: dict[str, float], say: Callable[[str], None]) -> ModelExport:
        name, result = self.name, self.result
        test_inputs = self.inputs(rows.test)
        model = result.model.eval()
        if result.encoding.preprocessing.get("kind") == "image":
            model = replace_conv2d_same(model, int(result.encoding.preprocessing["input_size"]), test_inputs.shape[1])
        encoder = ShippedEncoder(model, result.encoding.embed)
        fp32 = self.folder / "model_fp32.onnx"
        say(f"exporting the {name} model to ONNX (input {list(test_inputs.shape[1:])})")
        try:
            export_module(encoder, (torch.from_numpy(test_inputs[:2]),), [SAMPLES], ["embedding", "logits"], fp32)
        except Exception as error:  # noqa: BLE001  (report which model failed and why)
            raise ExportError(f"{name}: ONNX export failed: {error}") from error
        # Against the original model (with its dynamic padding): the replacement is verified too.
        check = verify_module(
            ShippedEncoder(result.model.eval(), result.encoding.embed), fp32, [test_inputs[:VERIFY_SAMPLES]]
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
        paths, failures = build_variants(
            name,
            fp32,
            self.folder,
            spec,
            calibration,
            self.plan.export.quantization,
            say,
            qat=self.plan.sensors is not None and self.plan.sensors[name].training.qat is not None,
        )
        sample = test_inputs[:1]

        def predict(session: Any) -> np.ndarray:
            return np.asarray(run_batched(session, {SAMPLES: test_inputs})[1].argmax(1))

        def time(session: Any) -> LatencyStats:
            return plan_latency(self.plan, lambda x: session.run(None, {SAMPLES: x}), sample)

        return score_variants(name, paths, failures, self.labels(rows.test), predict, time, spec, say)
