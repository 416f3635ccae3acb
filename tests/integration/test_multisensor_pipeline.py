"""The multi-sensor pipeline through `rooivalk run` (kfp.local SubprocessRunner, MLflow on sqlite):
simulate -> ingest -> four sensor tasks -> feature cache -> fusion -> evaluate -> export -> register.
Then preemption: the same command in another run folder, SIGKILLed while the RF model trains, rerun,
SIGKILLed again while the fusion model trains, rerun, ends with the weights and every step's figures of
the uninterrupted run, and its last rerun finds every encoder's features in the cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from rooivalk.data.multisensor_dataset import load_multisensor
from rooivalk.evaluation.profile import load_profile
from rooivalk.export import SystemPredictor
from rooivalk_kfp.pipelines.multisensor import multisensor_steps

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SENSORS = ["optical", "rf", "radar", "acoustic"]


# Figures of time (they differ between any two runs), of what timing picks (the shipped variant is the
# fastest within tolerance: its size follows) and of the feature cache (a rerun hits it).
NOT_COMPARED = (
    "seconds",
    "latency",
    "_ms",
    "per_second",
    "speedup",
    "size_mb",
    "forward_passes",
    "cache_hits",
    "cache_misses",
)


def tiny_counter_drone_plan(source: Path) -> dict[str, Any]:
    """Every sensor family at toy size, fixed epochs (no wall-clock budget) and deterministic kernels, so
    that a rerun trains bit-identical encoders and must hit the feature cache. Checkpoints every step, and
    enough RF and fusion steps to be killed in the middle of."""
    steady = {"deterministic": True, "checkpoint": {"every_steps": 1, "keep_last": 2}}
    quick = {"epochs": 1, "batch_size": 16, "lr": 1e-3, "threads": 1, **steady}
    return {
        "name": "tiny-counter-drone",
        "data": {"source": str(source), "format": "multisensor", "simulate": {"count": 120, "seed": 3}},
        "sensors": {
            "optical": {"model": {"architecture": "test_efficientnet", "input_size": 32}, "training": quick},
            "rf": {
                "model": {"family": "rf_cnn_transformer", "architecture": "small"},
                "training": {**quick, "epochs": 4},
            },
            "radar": {"model": {"family": "radar_sequence", "architecture": "gru"}, "training": quick},
            "acoustic": {"model": {"family": "acoustic_crepe", "architecture": "tiny"}, "training": quick},
        },
        "fusion": {
            "width": 16,
            "heads": 2,
            "depth": 1,
            "training": {"epochs": 5, "batch_size": 16, "threads": 1, **steady},
        },
        # The attribution model's own table and steps, deterministic like the rest: a rerun gives its figures.
        "attribution": {
            "data": {
                "source": str(source.parent / "attribution" / "events.parquet"),
                "format": "table",
                "simulate": {"kind": "attribution", "count": 200, "seed": 3},
            },
            "model": {"family": "mlp", "architecture": "16-8"},
            "training": {"epochs": 2, "batch_size": 16, "threads": 1, **steady},
            "ensemble": {"xgboost": {"trees": 5, "max_depth": 3}},
            "export": {"precisions": ["fp32"], "latency_runs": 100, "latency_warmup": 1},
        },
        "evaluation": {"gates": [{"metric": "fusion_test_accuracy", "min": 0.0}]},
        "export": {
            "latency_runs": 100,
            "latency_warmup": 1,
            "quantization": {"samples": 32},
            "gates": [{"metric": "system_accuracy_drop", "max": 1.0}],
        },
        "tracking": {"experiment": "tiny-counter-drone"},
    }


def _command(plan_path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "rooivalk.cli.app", "run", str(plan_path), "--out", str(out)]


def _run(plan_path: Path, out: Path) -> dict[str, Any]:
    result = subprocess.run(
        _command(plan_path, out),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return json.loads((out / "summary.json").read_text())  # type: ignore[no-any-return]


def _newest_step(checkpoints: Path) -> int:
    try:
        return int(json.loads((checkpoints / "manifest.json").read_text())[-1]["global_step"])
    except (FileNotFoundError, json.JSONDecodeError, IndexError, KeyError):
        return 0


def _kill_during(plan_path: Path, out: Path, step: str, at: int) -> int:
    """Start the run in its own process group and SIGKILL all of it (the runner and its step
    subprocesses) once `step`'s checkpoints reach global step `at`; the newest checkpoint's step then."""
    checkpoints = out / "checkpoints" / step
    process = subprocess.Popen(
        _command(plan_path, out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 900
    while _newest_step(checkpoints) < at:
        assert process.poll() is None, (process.stderr.read() if process.stderr else b"").decode()[-4000:]
        assert time.monotonic() < deadline, f"{step}: no checkpoint progress"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return _newest_step(checkpoints)


# The attribution steps depend on no sensor step, so kfp.local may run them before a kill lands: the
# killed run's attempts then register more than one attribution version, and the version number and the
# promotion figures depend on how many. Its training figures are compared; its registration is not.
REGISTERED_EVERY_ATTEMPT = ("register_attribution",)


def _figures(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {
        name: {k: v for k, v in step["metrics"].items() if not any(word in k for word in NOT_COMPARED)}
        for name, step in summary["steps"].items()
        if name not in REGISTERED_EVERY_ATTEMPT
    }


def _changed_weights(a: dict[str, Any], b: dict[str, Any], step: str) -> list[str]:
    first, second = (
        torch.load(Path(s["steps"][step]["artifacts"]["model"]["uri"]) / "model.pt", weights_only=True) for s in (a, b)
    )
    return [name for name in first if not torch.equal(first[name], second[name])]


@pytest.mark.timeout(1200)  # four pipeline runs (one whole, two killed, one resumed)
def test_counter_drone_pipeline_end_to_end_then_a_killed_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(tiny_counter_drone_plan(tmp_path / "events"), sort_keys=False))
    out = tmp_path / "run"
    summary = _run(plan_path, out)

    assert summary["pipeline"] == "rooivalk-multisensor"
    assert list(summary["steps"]) == multisensor_steps(SENSORS, attribution=True)
    assert all(step["status"] == "succeeded" for step in summary["steps"].values()), summary["steps"]
    steps = summary["steps"]
    assert steps["ingest_events"]["metrics"]["num_events"] == 120
    first_passes = steps["cache_features"]["metrics"]["encoder_forward_passes"]
    assert first_passes > 120  # every sensor's encoder ran over its events
    features_key = steps["cache_features"]["features_key"]

    report = Path(steps["evaluate_system"]["artifacts"]["report"]["uri"])
    evaluation = json.loads((report / "evaluation.json").read_text())
    profile, profile_info = load_profile(evaluation["reference_profile"])
    assert profile_info.dataset_version == summary["dataset_version"]
    assert set(profile_info.embeddings) == set(SENSORS)
    assert set(evaluation["results"]["sensors"]) == set(SENSORS)
    assert len(evaluation["results"]["fusion"]["degraded"]) == 1 + 4 + 6  # none, each sensor, each pair
    assert "| sensors removed |" in (report / "evaluation.md").read_text()
    from rooivalk.cli.report import render_report

    run_report = render_report(summary, "rooivalk run")  # `rooivalk report` of this run's summary.json
    assert "| **fusion** |" in run_report
    assert all(f"| {sensor} alone |" in run_report for sensor in SENSORS)

    export = Path(steps["export_system"]["artifacts"]["exported"]["uri"])
    exported = json.loads((export / "export_report.json").read_text())
    assert set(exported["shipped"]) == {*SENSORS, "fusion"}
    for model in [*SENSORS, "fusion"]:
        assert (export / "variants" / model / "model_fp32.onnx").is_file()
        assert (export / "bundles" / model / "bundle.json").is_file()
        variants = exported["models"][model]["variants"]
        assert set(variants) == {"fp32", "fp16", "int8_static", "int8_dynamic"}, (model, variants)
        shipped = variants[exported["shipped"][model]]
        assert shipped["passed"]
        assert shipped["accuracy_drop"] <= exported["models"][model]["tolerance"] + 1e-9
    assert exported["metrics"]["fusion_onnx_max_abs_diff"] < 1e-3
    assert exported["metrics"]["optical_onnx_top1_agreement"] == 1.0
    assert exported["metrics"]["system_fp32_test_accuracy"] == pytest.approx(
        evaluation["metrics"]["fusion_test_accuracy"], abs=0.02
    )  # the ONNX system gives PyTorch's answer
    assert exported["metrics"]["end_to_end_latency_ms"] > 0
    # The shipped bundles alone answer like the export step's ONNX system (temperature keeps the argmax).
    dataset = load_multisensor(steps["ingest_events"]["artifacts"]["dataset"]["uri"])
    rows = dataset.split_mask("test") & np.logical_and.reduce([dataset.present_of(s) for s in SENSORS])
    predictor = SystemPredictor.load(str(export / "bundles"))
    probabilities = predictor.predict_proba({s: dataset.arrays[s][rows] for s in SENSORS})
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    assert probabilities.shape == (int(rows.sum()), dataset.num_classes)

    client = MlflowClient(summary["tracking"]["uri"])
    parent = client.get_run(summary["tracking"]["run_id"])
    assert parent.info.status == "FINISHED"
    # The attribution steps: its own table, model, gates and bundle, registered under its own name.
    attribution = steps["train_attribution"]["metrics"]
    assert attribution["attribution_num_rows"] == 200
    assert {"attribution_test_member_model_accuracy", "attribution_test_member_xgboost_accuracy"} <= set(attribution)
    assert steps["register_attribution"]["registered_model"] == "tiny-counter-drone-attribution/1"
    bundle = Path(steps["train_attribution"]["artifacts"]["attribution"]["uri"]) / "export" / "bundles" / "model"
    assert json.loads((bundle / "bundle.json").read_text())["preprocessing"]["kind"] == "table"
    version = client.get_model_version_by_alias("tiny-counter-drone", "champion")
    assert version.tags["rooivalk.features_key"] == features_key
    assert version.tags["rooivalk.sensors"] == ",".join(sorted(SENSORS))

    # Preemption, in another run folder: SIGKILL while RF trains (rf: ~4 steps an epoch x 4 epochs), rerun,
    # SIGKILL while fusion trains (5 steps an epoch x 5), rerun. Finished steps resume from their last
    # checkpoint and train no further.
    killed = tmp_path / "killed"
    rf_steps = _newest_step(out / "checkpoints" / "train_sensor_rf")
    fusion_steps = _newest_step(out / "checkpoints" / "train_fusion")
    assert 5 <= _kill_during(plan_path, killed, "train_sensor_rf", 5) < rf_steps, (
        "the kill must land inside RF training"
    )
    assert 7 <= _kill_during(plan_path, killed, "train_fusion", 7) < fusion_steps, "the kill must land inside fusion"
    again = _run(plan_path, killed)
    assert _figures(again) == _figures(summary)
    assert again["steps"]["register_attribution"]["registered_model"].startswith("tiny-counter-drone-attribution/")
    for step in ("train_fusion", *(f"train_sensor_{s}" for s in SENSORS)):
        assert _changed_weights(summary, again, step) == [], step
    # The second run cached every encoder's features before it was killed; the last one only reads them.
    assert again["steps"]["cache_features"]["metrics"]["encoder_forward_passes"] == 0
    assert again["steps"]["cache_features"]["features_key"] == features_key
