"""The model-version record (ASPICE MLE.3 BP5): what a registered version is, how it was trained and on
what, what it measured against each requirement, and where its artifacts are.

Gathered at registration from the pipeline run's step runs in MLflow (ingest: sample counts; train:
epochs, best epoch, time, GPU, validation figures; evaluate and export: test and export figures), the
plan (requirements, architecture) and the registry (the version it challenges). Kept three ways: what
MLflow has a field for goes there (the version's run, source and description), the key facts as
version tags (`rooivalk.requirement.<id>`, `rooivalk.previous_version`, `rooivalk.samples.<split>`,
...), and the whole record as `model_record.json` in the registration run (rewritten on every status
change, so it always holds the status history and the approval).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rooivalk.plan import Plan
from rooivalk.plan.requirements import bounds_text, measure_requirements
from rooivalk.tracking.runs import PARENT_TAG, STEP_TAG, git_commit, package_versions

RECORD_FILE = "model_record.json"
REQUIREMENT_TAG = "rooivalk.requirement."
GPU_TAG = "rooivalk.gpu"  # set on a step run by rooivalk.steps.step_context when CUDA trained it
SCHEMA = 1


def step_runs(client: Any, parent_run_id: str) -> dict[str, Any]:
    """The pipeline run's step runs by step name (the newest of a retried step)."""
    parent = client.get_run(parent_run_id)
    found = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=500
    )
    runs: dict[str, Any] = {}
    for run in sorted(found, key=lambda r: r.info.start_time or 0):
        step = run.data.tags.get(STEP_TAG)
        if step:
            runs[step] = run
    return runs


def _training(runs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per training step: epochs (over every stage), best epoch, seconds, and the GPU (or none)."""
    training = {}
    for step, run in runs.items():
        if not step.startswith("train"):
            continue
        # A step that trains one model among several prefixes its figures with the model (train_attribution:
        # attribution_best_epoch ...); read them under their plain names.
        prefix = f"{step.removeprefix('train_')}_"
        metrics = {key.removeprefix(prefix): value for key, value in run.data.metrics.items()}
        stage_epochs = [v for k, v in metrics.items() if k.startswith("stage_") and k.endswith("_epochs")]
        training[step] = {
            "epochs": int(sum(stage_epochs)) if stage_epochs else metrics.get("epochs"),
            "best_epoch": metrics.get("best_epoch"),
            "seconds": metrics.get("train_seconds", metrics.get("step_seconds")),
            "gpu": run.data.tags.get(GPU_TAG, "none"),
            "run_id": run.info.run_id,
        }
    return training


def _figures(runs: dict[str, Any], prefix: str, keep: tuple[str, ...] = ()) -> dict[str, float]:
    """The metrics of the steps named `prefix`* (all, or those starting with one of `keep`)."""
    figures: dict[str, float] = {}
    for step, run in runs.items():
        if step.startswith(prefix):
            figures.update({k: v for k, v in run.data.metrics.items() if not keep or k.startswith(keep)})
    return figures


def _artifact_uris(run_id: str, parent_run_id: str, artifacts: dict[str, str]) -> dict[str, Any]:
    """runs:/ URIs of what the registration run holds: weights, trained folder, config, ONNX, TensorRT."""
    uris: dict[str, Any] = {
        "weights": f"runs:/{run_id}/model",
        "config": f"runs:/{parent_run_id}/plan.json",
        **{name: f"runs:/{run_id}/{name}" for name in artifacts},
    }
    export = artifacts.get("onnx")
    if export is not None and Path(export).is_dir():
        root = Path(export)
        found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        uris["onnx_files"] = [f"runs:/{run_id}/onnx/{path}" for path in found if path.endswith(".onnx")]
        engines = (".engine", ".plan", ".trt")
        uris["tensorrt_engines"] = [f"runs:/{run_id}/onnx/{path}" for path in found if path.endswith(engines)]
    return uris


def architecture_id(plan: Plan) -> str:
    """family/architecture of the model, or of each sensor and the fusion."""
    if plan.model is not None:
        return f"{plan.model.family}/{plan.model.architecture}"
    sensors, fusion = plan.multisensor_parts()
    parts = [f"{name}={spec.model.family}/{spec.model.architecture}" for name, spec in sensors.items()]
    return ",".join([*parts, f"fusion=transformer-{fusion.width}x{fusion.depth}h{fusion.heads}"])


def build_record(
    client: Any,
    plan: Plan,
    name: str,
    version: str,
    run_id: str,
    parent_run_id: str,
    dataset_version: str,
    artifacts: dict[str, str],
    previous_version: str | None,
    own_steps: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The record of a just-registered version (see the module docstring); status and history are added
    by whoever moves its status. `own_steps`: only these step runs made the model (None: every step)."""
    runs = step_runs(client, parent_run_id)
    if own_steps is not None:
        runs = {step: run for step, run in runs.items() if step in own_steps}
    measured = {**_figures(runs, "evaluate"), **_figures(runs, "export")}
    requirements = measure_requirements(plan.requirements, measured)
    counts = _figures(runs, "ingest", ("train_size", "val_size", "test_size", "num_", "test_"))
    return {
        "schema": SCHEMA,
        "name": name,
        "version": version,
        "description": plan.description,
        "runs": {"pipeline": parent_run_id, "registration": run_id, **{s: r.info.run_id for s, r in runs.items()}},
        "artifacts": _artifact_uris(run_id, parent_run_id, artifacts),
        "metrics": {
            "validation": _figures(runs, "train", ("val_", "best_val_", "stage_")),
            "test": _figures(runs, "evaluate"),
            "export": _figures(runs, "export"),
        },
        "data": {
            "dataset_version": dataset_version,
            "samples": {
                split: int(counts[f"{split}_size"]) for split in ("train", "val", "test") if f"{split}_size" in counts
            },
            "counts": counts,
        },
        "training": _training(runs),
        "dependencies": package_versions(),
        "git_commit": git_commit(),
        "plan_digest": plan.digest(),
        "traceability": {
            "requirements": requirements,
            "architecture": architecture_id(plan),
            "previous_version": previous_version,
        },
        "requirements_passed": all(record["passed"] is True for record in requirements),
        "status": None,
        "status_history": [],
        "approval": None,
    }


def record_tags(record: dict[str, Any]) -> dict[str, str]:
    """The version tags that carry the record's key facts (MLflow shows and searches tags)."""
    trace = record["traceability"]
    tags = {
        "rooivalk.architecture": trace["architecture"],
        "rooivalk.previous_version": trace["previous_version"] or "none",
        "rooivalk.requirements_passed": "true" if record["requirements_passed"] else "false",
        "rooivalk.requirement_ids": ",".join(r["id"] for r in trace["requirements"]),
        "rooivalk.record": f"runs:/{record['runs']['registration']}/{RECORD_FILE}",
        **{f"rooivalk.samples.{split}": str(n) for split, n in record["data"]["samples"].items()},
    }
    for requirement in trace["requirements"]:
        verdict = {True: "pass", False: "fail", None: "not measured"}[requirement["passed"]]
        value = "" if requirement["value"] is None else f" {requirement['value']:.6g}"
        tags[f"{REQUIREMENT_TAG}{requirement['id']}"] = f"{verdict}{value}"
    for step, figures in record["training"].items():
        tags[f"rooivalk.training.{step}"] = json.dumps(
            {k: v for k, v in figures.items() if k != "run_id"}, separators=(",", ":")
        )
    return tags


def describe(record: dict[str, Any], promotion: str | None = None) -> str:
    """The version's MLflow description (Markdown): what the model is, key figures, requirements' verdict,
    status and approval."""
    trace, samples = record["traceability"], record["data"]["samples"]
    test = record["metrics"]["test"]
    key = {k: v for k, v in test.items() if k.endswith(("test_accuracy", "test_map50", "test_macro_f1"))}
    lines = [
        f"**{record['name']} version {record['version']}**: {record['description'] or 'a rooivalk model'} "
        f"({trace['architecture']}).",
        "",
        f"Status: **{record['status']}**"
        + (f", approved by {record['approval']['by']} on {record['approval']['at']}" if record["approval"] else ""),
        f"Data: {record['data']['dataset_version']} ("
        + ", ".join(f"{split} {n}" for split, n in samples.items())
        + ")",
        "Key figures: " + (", ".join(f"{k} {v:.4f}" for k, v in sorted(key.items())) or "none"),
        f"Previous version: {trace['previous_version'] or 'none'}",
    ]
    if promotion:
        lines.append(f"Promotion: {promotion}")
    lines += ["", "| requirement | criterion | measured | verdict |", "| --- | --- | --- | --- |"]
    for r in trace["requirements"]:
        bounds = bounds_text(r["min"], r["max"])
        what = r["metric"] + (f"[{r['class_name']}]" if r["class_name"] else "")
        value = "-" if r["value"] is None else f"{r['value']:.4f}"
        verdict = {True: "pass", False: "FAIL", None: "not measured"}[r["passed"]]
        lines.append(f"| {r['id']}: {r['text']} | {what} {bounds} | {value} | {verdict} |")
    if not trace["requirements"]:
        lines.append("| (the plan lists no requirements) | | | |")
    return "\n".join(lines)


def onnx_signature(export_dir: str | None, model_name: str) -> Any | None:
    """The MLflow signature of the registered network from its FP32 ONNX export (inputs and outputs by name,
    dtype and shape; -1 where the graph's axis is dynamic), or None when the export has no such graph."""
    if export_dir is None:
        return None
    candidates = [
        Path(export_dir, "variants", model_name, "model_fp32.onnx"),
        Path(export_dir, "bundles", model_name, "model.onnx"),
        Path(export_dir, "model.onnx"),
    ]
    graph_file = next((path for path in candidates if path.is_file()), None)
    if graph_file is None:
        return None
    import numpy as np
    import onnx
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    graph = onnx.load(str(graph_file), load_external_data=False).graph

    def spec(value: Any) -> TensorSpec:
        tensor = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        shape = tuple(dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor.shape.dim)
        return TensorSpec(dtype, shape, value.name)

    initializers = {init.name for init in graph.initializer}
    inputs: list[ColSpec | TensorSpec] = [spec(value) for value in graph.input if value.name not in initializers]
    outputs: list[ColSpec | TensorSpec] = [spec(value) for value in graph.output]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))
