"""The export step of a sequence or table plan: verified FP32 ONNX -> precision variants -> one bundle.

As the image export (rooivalk.export.pipeline_step): the FP32 graph is checked against PyTorch
before anything is built on it, every variant is scored on the test split with the inputs training
used (rooivalk.models.array_inference.model_arrays), and the fastest variant within the plan's
accuracy tolerance ships with its softmax temperature and the dataset's encoding, so that
`Predictor` runs raw data end to end:
- rnn: inputs "sequences" float32 (batch, steps, F) and "lengths" int64 (batch,), both axes dynamic
  (rooivalk.export.rnn_onnx); the bundle's preprocessing (kind "sequence") holds the feature names,
  the stored length and the standardization;
- mlp: input "input" float32 (batch, F); the bundle's preprocessing (kind "table") holds the table
  encoding (numeric features and their standardization, categorical features and their categories).
A variant ensemble (rooivalk.plan.variants) ships one graph of its members' weighted probabilities, built
and checked member by member (rooivalk.export.variant_export); its PyTorch baseline runs every member.
Latency is batch 1: one sequence of the stored length, or one row.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import softmax
from torch import nn

from rooivalk.data.datasets import ArrayDataset, load_array_dataset
from rooivalk.evaluation.ensemble import combine
from rooivalk.evaluation.gates import check_gates
from rooivalk.export.benchmark import measure_latency, ort_session
from rooivalk.export.ensemble_onnx import merge_ensemble
from rooivalk.export.export_result import ExportResult
from rooivalk.export.onnx_export import INPUT_NAME, OUTPUT_NAME, export_module, run_batched, verify_module
from rooivalk.export.rnn_onnx import export_rnn_onnx
from rooivalk.export.selection import build_variants, score_variants
from rooivalk.export.shipping import (
    REPORT_FILE,
    ExportError,
    budget_gates,
    calibrate,
    calibration_source,
    environment,
    export_folders,
    output_location,
    prune_variants,
    publish_variants,
    raise_on_failed_gates,
    report_settings,
    seeded_subset,
    ship_bundle,
    single_model_metrics,
    write_report,
)
from rooivalk.export.variant_export import describe_variants, export_variant_graph
from rooivalk.export.xgboost_onnx import export_xgboost_onnx, verify_xgboost_onnx
from rooivalk.models.array_artifact import ArrayModelInfo, load_array_model, load_xgboost_member
from rooivalk.models.array_inference import INPUTS, LENGTHS, SEQUENCES, array_logits, model_arrays
from rooivalk.models.inference import Arrays
from rooivalk.models.variant_ensemble import VariantEnsemble
from rooivalk.plan import Plan
from rooivalk.training.xgboost_training import predict_probabilities

log = logging.getLogger(__name__)

MODEL = "model"
VERIFY_SAMPLES = 32


def onnx_feeds(info: ArrayModelInfo, arrays: Arrays) -> dict[str, np.ndarray]:
    """The ONNX graph's feeds for the model's named input arrays (the mlp's graph input is "input")."""
    if info.kind == "sequences":
        return {SEQUENCES: np.asarray(arrays[SEQUENCES]), LENGTHS: np.asarray(arrays[LENGTHS], np.int64)}
    return {INPUT_NAME: np.asarray(arrays[INPUTS])}


def _rows(feeds: dict[str, np.ndarray], rows: np.ndarray | slice) -> dict[str, np.ndarray]:
    return {name: array[rows] for name, array in feeds.items()}


def _describe(info: ArrayModelInfo) -> str:
    return describe_variants(info) if info.variants is not None else f"{info.spec.family} {info.spec.architecture}"


def _export_fp32(model: nn.Module, path: Any, info: ArrayModelInfo) -> None:
    features = len(info.input_names)
    if info.kind == "sequences":
        export_rnn_onnx(model, path, features)
    else:
        export_module(model.eval(), (torch.zeros(2, features),), [INPUT_NAME], [OUTPUT_NAME], path)


def _baseline_latency(plan: Plan, model: nn.Module, booster: Any, sample: dict[str, np.ndarray]) -> float:
    """Median batch-1 latency (ms) of the Python baseline the ONNX graph replaces: the model in PyTorch
    eager FP32 and, for an ensemble, its XGBoost member through xgboost's own predict too."""
    inputs = tuple(torch.from_numpy(array) for array in sample.values())
    model = model.eval()

    def run(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with torch.inference_mode():
            logits: torch.Tensor = model(*batch)
        if booster is not None:
            booster.inplace_predict(batch[0].numpy())
        return logits

    return measure_latency(run, inputs, plan.export.latency_runs, plan.export.latency_warmup).median_ms


def _merge_ensemble(
    plan: Plan,
    model: nn.Module,
    booster: Any,
    info: ArrayModelInfo,
    fp32: Path,
    scratch: Path,
    test: dict[str, np.ndarray],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Replace the verified mlp graph at `fp32` by the ensemble graph, each step verified; the checks."""
    assert info.ensemble is not None
    rows = test[INPUT_NAME]
    trees = export_xgboost_onnx(booster, scratch / "xgboost.onnx", rows.shape[1])
    tree_check = verify_xgboost_onnx(booster, trees, rows)
    say(f"XGBoost ONNX verified: max |probability diff| {tree_check.max_abs_diff:.2e}")
    mlp = scratch / "mlp.onnx"
    shutil.move(fp32, mlp)
    merge_ensemble(mlp, trees, info.ensemble.weights, fp32)
    want = combine(
        {
            "model": softmax(array_logits(model, {INPUTS: rows}, info.num_classes), axis=1),
            "xgboost": predict_probabilities(booster, rows),
        },
        info.ensemble.weights,
    )
    have = softmax(run_batched(ort_session(fp32), {INPUT_NAME: rows})[0], axis=1)
    diff = float(np.abs(have - want).max()) if len(rows) else 0.0
    if not diff <= plan.export.max_abs_diff:
        fp32.unlink()
        raise ExportError(
            f"the ensemble graph does not match its members: max |probability difference| {diff:.3g} > "
            f"export.max_abs_diff {plan.export.max_abs_diff:.3g}"
        )
    agreement = float((have.argmax(1) == want.argmax(1)).mean()) if len(rows) else 1.0
    say(f"ensemble ONNX verified: max |probability diff| {diff:.2e}, weights {info.ensemble.weights}")
    return {"xgboost": tree_check.__dict__, "ensemble": {"max_abs_diff": diff, "top1_agreement": agreement}}


def preprocessing(info: ArrayModelInfo) -> dict[str, Any]:
    """The bundle's preprocessing: what rooivalk.export.predictor needs to turn raw data into feeds."""
    if info.kind == "sequences":
        return {
            "kind": "sequence",
            "features": info.input_names,
            "length": info.length,
            "mean": info.mean,
            "std": info.std,
        }
    return {"kind": "table", "table": info.table}


def _test_split(dataset: ArrayDataset) -> str:
    for split in ("test", "val"):
        if dataset.split_mask(split).any():
            if split != "test":
                log.warning("dataset has no test split; export accuracy is measured on %r", split)
            return split
    raise ExportError(f"dataset {dataset.info.version_id}: no test or val samples to measure export accuracy on")


def export_array_model(
    plan: Plan,
    model_dir: str,
    dataset_dir: str,
    export_dir: str,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export the rnn or mlp model in `model_dir`, ship its best variant, and measure everything."""
    say = progress or log.info
    if "tensorrt" in plan.export.targets:
        raise ExportError("export.targets: tensorrt builds image models; sequence and table models ship ONNX")
    model, info = load_array_model(model_dir)
    dataset = load_array_dataset(dataset_dir)
    split = _test_split(dataset)
    test_arrays, test_labels = model_arrays(info, dataset, split)
    test = onnx_feeds(info, test_arrays)
    val_arrays, val_labels = model_arrays(info, dataset, "val")
    val = onnx_feeds(info, val_arrays)
    calibration_from = calibration_source(plan)
    source = onnx_feeds(info, model_arrays(info, dataset, calibration_from.split)[0])
    count = len(next(iter(source.values())))
    if count == 0:
        raise ExportError(f"dataset {dataset.info.version_id}: no samples in the calibration split for static INT8")
    calibration = _rows(source, seeded_subset(count, plan.export.quantization.samples))
    spec = plan.export.for_model(MODEL)
    with export_folders(export_dir) as (out_dir, scratch):
        variants_dir = out_dir / "variants" / MODEL
        variants_dir.mkdir(parents=True, exist_ok=True)
        fp32 = variants_dir / "model_fp32.onnx"
        say(f"exporting {_describe(info)} to ONNX ({len(info.input_names)} features)")
        members: dict[str, Any] = {}
        if isinstance(model, VariantEnsemble):  # the members' graphs, merged into one of their probabilities
            export = partial(_export_fp32, info=info)
            members = export_variant_graph(plan, model, info, fp32, scratch, test, VERIFY_SAMPLES, export, say)
        else:
            _export_fp32(model, fp32, info)
        # A variant ensemble's graph against its PyTorch network: both give log of the weighted probabilities.
        check = verify_module(model, fp32, list(_rows(test, slice(0, VERIFY_SAMPLES)).values()))
        if not check.max_abs_diff <= plan.export.max_abs_diff:  # `not <=` also catches NaN
            fp32.unlink()
            raise ExportError(
                f"ONNX export does not match PyTorch: max |logit difference| {check.max_abs_diff:.3g} > "
                f"export.max_abs_diff {plan.export.max_abs_diff:.3g} ({fp32.name})"
            )
        say(f"ONNX FP32 verified: max |logit diff| {check.max_abs_diff:.2e}, top-1 agreement {check.top1_agreement}")
        verification: dict[str, Any] = {MODEL: check.__dict__, **({"variants": members} if members else {})}
        booster = load_xgboost_member(model_dir, info) if info.ensemble is not None else None
        if booster is not None:  # the shipped graph is the weighted ensemble of both members
            verification |= _merge_ensemble(plan, model, booster, info, fp32, scratch, test, say)
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
        sample = _rows(test, slice(0, 1))

        def time(session: Any) -> Any:
            return measure_latency(
                lambda feeds: session.run(None, feeds), sample, plan.export.latency_runs, plan.export.latency_warmup
            )

        def logits(session: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
            return run_batched(session, feeds)[0]  # (N, K): the graph's first output is the logits

        def predict(session: Any) -> np.ndarray:
            return np.asarray(logits(session, test).argmax(1))

        choice = score_variants(MODEL, paths, failures, test_labels, predict, time, spec, say)
        say("timing PyTorch eager FP32 at batch 1 (the baseline; with an ensemble, xgboost's predict too)")
        torch_ms = _baseline_latency(plan, model, booster, sample)
        bundle_dir = scratch / "bundle-files"
        bundle_dir.mkdir()
        shipped_session = ort_session(choice.paths[choice.chosen])
        temperature, extra = calibrate(plan, choice, logits(shipped_session, val), val_labels, bundle_dir, say)
        prune_variants(choice)
        metrics = single_model_metrics(check, choice, torch_ms)
        gates = check_gates(plan.export.gates, metrics, missing_fails=True)
        gates += budget_gates(plan, [choice], metrics["end_to_end_latency_p95_ms"])
        bundle_uri = output_location(out_dir, export_dir, f"bundles/{MODEL}")
        metadata = {
            "plan_digest": plan.digest(),
            "dataset_version": info.dataset_version,
            "architecture": _describe(info),
            **environment(),
        }
        artifacts = ship_bundle(bundle_uri, choice, info.classes, preprocessing(info), temperature, metadata, extra)
        report = {
            "metrics": metrics,
            "gates": gates,
            "passed": all(gate["passed"] for gate in gates),
            "models": {MODEL: choice.report()},
            "verification": verification,
            "evaluation_split": split,
            **report_settings(plan, calibration_from),
            "dataset_version": info.dataset_version,
        }
        artifacts |= publish_variants(out_dir, MODEL, export_dir)
        artifacts[REPORT_FILE] = write_report(out_dir, export_dir, report)
    say(f"export done: {choice.summary()}; bundle {bundle_uri}")
    result = ExportResult(metrics, artifacts, gates, [choice], {MODEL: bundle_uri})
    raise_on_failed_gates(plan, gates, artifacts[REPORT_FILE])
    return result
