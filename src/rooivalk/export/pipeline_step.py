"""The export step of a single-model plan: verified FP32 ONNX -> precision variants -> the one that ships.

Order matters: the FP32 ONNX model is checked against PyTorch before anything is built on it; every
variant (FP16, static INT8 calibrated on the plan's calibration source, dynamic INT8) is built from
that verified file and scored on the test split with the same preprocessing as training
(`to_model_input`); the fastest variant within the plan's tolerance ships in a deployment bundle
with its softmax temperature (rooivalk.export.shipping). A variant ensemble (rooivalk.plan.variants) ships
one graph of its members' weighted probabilities, built and checked member by member
(rooivalk.export.variant_export), then checked against its PyTorch network as a single model is.
Layout of the export folder:
    variants/model/model_<precision>.onnx   FP32 and the shipped variant (and engine sources)
    bundles/model/                          the deployment bundle (rooivalk.export.Predictor loads it)
    export_report.json                      every variant's scores, the choice, gates, environment
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rooivalk.data.dataset import load_dataset
from rooivalk.data.transforms import to_model_input
from rooivalk.evaluation.gates import check_gates
from rooivalk.export.array_export import export_array_model
from rooivalk.export.benchmark import measure_latency, ort_runner, ort_session, torch_runner
from rooivalk.export.detector_export import export_detector
from rooivalk.export.export_result import ExportResult
from rooivalk.export.onnx_export import INPUT_NAME, export_onnx, replace_conv2d_same, run_batched, verify_module
from rooivalk.export.selection import build_variants, score_variants
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
    single_model_metrics,
    write_report,
)
from rooivalk.export.variant_export import describe_variants, export_variant_graph
from rooivalk.models.array_artifact import is_array_model
from rooivalk.models.artifact import ModelInfo, load_trained_model
from rooivalk.models.detector_artifact import is_detector_model
from rooivalk.models.variant_ensemble import VariantEnsemble
from rooivalk.plan import Plan

log = logging.getLogger(__name__)

MODEL = "model"  # the one model's name in metrics, reports and folders
VERIFY_SAMPLES = 32
BATCH = 256

__all__ = ["ExportError", "ExportResult", "export_model"]


@dataclass
class _Splits:
    calibration: np.ndarray  # uint8 (N, H, W, C)
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    test_split: str


def _splits(plan: Plan, dataset_dir: str, calibration: CalibrationSource) -> _Splits:
    dataset = load_dataset(dataset_dir)
    calibration_images, _ = dataset.subset(calibration.split)
    if len(calibration_images) == 0:
        raise ExportError(f"{dataset_dir}: no samples in the calibration split for static INT8")
    for split in ("test", "val"):
        images, labels = dataset.subset(split)
        if len(images):
            if split != "test":
                log.warning("dataset has no test split; export accuracy is measured on %r", split)
            return _Splits(
                calibration_images[seeded_subset(len(calibration_images), plan.export.quantization.samples)],
                dataset.subset("val"),
                (images, labels),
                split,
            )
    raise ExportError(f"{dataset_dir}: no test or val samples to measure export accuracy on")


def _preprocess(images: np.ndarray, info: ModelInfo) -> np.ndarray:
    return to_model_input(images, info.input_size, info.mean, info.std, info.in_chans).numpy()


def _logits(session: Any, images: np.ndarray, info: ModelInfo) -> np.ndarray:
    """(N, K) logits of an ONNX session over uint8 images, preprocessed BATCH at a time."""
    chunks = [
        run_batched(session, {INPUT_NAME: _preprocess(images[s : s + BATCH], info)})[0]
        for s in range(0, len(images), BATCH)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, info.num_classes), np.float32)


def _export_fp32(model: torch.nn.Module, info: ModelInfo, path: Path) -> None:
    """The FP32 graph of one image model, its TF-"SAME" convolutions padded statically for the export."""
    static = replace_conv2d_same(model, info.input_size, info.in_chans)
    export_onnx(static, info.input_size, info.in_chans, path)


def export_model(
    plan: Plan,
    model_dir: str,
    dataset_dir: str,
    export_dir: str,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export the trained model in `model_dir`, ship its best variant, and measure everything.

    Raises ExportError when the FP32 ONNX logits differ from PyTorch's by more than
    `plan.export.max_abs_diff` (or a target cannot be built here), and GateFailure (after writing
    everything) when an export gate or latency budget fails and `plan.export.fail_on_gate` is set.
    """
    if is_array_model(model_dir):  # an rnn or mlp model of a sequence or table plan
        return export_array_model(plan, model_dir, dataset_dir, export_dir, progress)
    if is_detector_model(model_dir):  # boxes: scored by mAP, NMS as the bundle's post-process
        return export_detector(plan, model_dir, dataset_dir, export_dir, progress)
    say = progress or log.info
    require_targets(plan)
    model, info = load_trained_model(model_dir)
    calibration_from = calibration_source(plan)
    splits = _splits(plan, dataset_dir, calibration_from)
    test_images, test_labels = splits.test
    spec = plan.export.for_model(MODEL)
    with export_folders(export_dir) as (out_dir, scratch):
        variants_dir = out_dir / "variants" / MODEL
        variants_dir.mkdir(parents=True, exist_ok=True)
        what = describe_variants(info) if info.variants is not None else info.spec.architecture
        say(f"exporting {what} to ONNX at {info.input_size}px")
        fp32 = variants_dir / "model_fp32.onnx"
        members: dict[str, Any] = {}
        if isinstance(model, VariantEnsemble):  # the members' graphs, merged into one of their probabilities
            feeds = {INPUT_NAME: _preprocess(test_images[:BATCH], info)}
            export = lambda member, path: _export_fp32(member, info, path)  # noqa: E731
            members = export_variant_graph(plan, model, info, fp32, scratch, feeds, VERIFY_SAMPLES, export, say)
        else:
            _export_fp32(model, info, fp32)
        # Compared with the original model, so the padding replacement is verified too.
        check = verify_module(model, fp32, [_preprocess(test_images[:VERIFY_SAMPLES], info)])
        if not check.max_abs_diff <= plan.export.max_abs_diff:  # `not <=` also catches NaN
            fp32.unlink()  # an unverified model must not look like an artifact
            raise ExportError(
                f"ONNX export does not match PyTorch: max |logit difference| {check.max_abs_diff:.3g} > "
                f"export.max_abs_diff {plan.export.max_abs_diff:.3g} ({fp32.name})"
            )
        say(f"ONNX FP32 verified: max |logit diff| {check.max_abs_diff:.2e}, top-1 agreement {check.top1_agreement}")
        calibration = {INPUT_NAME: _preprocess(splits.calibration, info)}
        paths, failures = build_variants(
            MODEL,
            fp32,
            variants_dir,
            spec,
            calibration,
            plan.export.quantization,
            say,
            qat=plan.training.qat is not None,
        )
        sample = _preprocess(test_images[:1], info)  # (1, C, S, S)

        def time(session: Any) -> Any:
            return measure_latency(ort_runner(session), sample, plan.export.latency_runs, plan.export.latency_warmup)

        def predict(session: Any) -> np.ndarray:
            return np.asarray(_logits(session, test_images, info).argmax(1))

        choice = score_variants(MODEL, paths, failures, test_labels, predict, time, spec, say)
        say("timing PyTorch eager FP32 at batch 1 (the baseline)")
        torch_latency = measure_latency(
            torch_runner(model), torch.from_numpy(sample), plan.export.latency_runs, plan.export.latency_warmup
        )
        bundle_dir = scratch / "bundle-files"  # diagram and engines, copied into the bundle
        bundle_dir.mkdir()
        shipped_session = ort_session(paths[choice.chosen])
        val_images, val_labels = splits.val
        temperature, extra = calibrate(
            plan, choice, _logits(shipped_session, val_images, info), val_labels, bundle_dir, say
        )
        engine_inputs = lambda: EngineInputs(  # noqa: E731
            sample={INPUT_NAME: sample},
            calibration=calibration,
            test={INPUT_NAME: _preprocess(test_images, info)},
            labels=test_labels,
        )
        extra |= build_engines(plan, choice, bundle_dir, engine_inputs, say)
        prune_variants(choice)
        metrics = single_model_metrics(check, choice, torch_latency.median_ms)
        gates = check_gates(plan.export.gates, metrics, missing_fails=True)
        gates += budget_gates(plan, [choice], metrics["end_to_end_latency_p95_ms"])
        bundle_uri = output_location(out_dir, export_dir, f"bundles/{MODEL}")
        preprocessing = {
            "kind": "image",
            "input_size": info.input_size,
            "mean": list(info.mean),
            "std": list(info.std),
            "in_chans": info.in_chans,
        }
        metadata = {
            "plan_digest": plan.digest(),
            "dataset_version": info.dataset_version,
            "architecture": what,
            **environment(),
        }
        artifacts = ship_bundle(bundle_uri, choice, info.classes, preprocessing, temperature, metadata, extra)
        report = {
            "metrics": metrics,
            "gates": gates,
            "passed": all(gate["passed"] for gate in gates),
            "models": {MODEL: choice.report()},
            "verification": {MODEL: check.__dict__, **({"variants": members} if members else {})},
            "evaluation_split": splits.test_split,
            **report_settings(plan, calibration_from),
            "dataset_version": info.dataset_version,
        }
        artifacts |= publish_variants(out_dir, MODEL, export_dir)
        artifacts[REPORT_FILE] = write_report(out_dir, export_dir, report)
    say(f"export done: {choice.summary()}; bundle {bundle_uri}")
    result = ExportResult(metrics, artifacts, gates, [choice], {MODEL: bundle_uri})
    raise_on_failed_gates(plan, gates, artifacts[REPORT_FILE])
    return result
