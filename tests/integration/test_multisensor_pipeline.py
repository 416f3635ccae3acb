"""The multi-sensor pipeline through `rooivalk run` (kfp.local SubprocessRunner, MLflow on sqlite):
simulate -> ingest -> four sensor tasks -> feature cache -> fusion -> evaluate -> export -> register,
then the same command again, which must find every encoder's features in the cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipelines.multisensor import multisensor_steps
from rooivalk.data.multisensor import load_multisensor
from rooivalk.export import SystemPredictor
from rooivalk.monitoring.profile import load_profile

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SENSORS = ["optical", "rf", "radar", "acoustic"]


def tiny_counter_drone_plan(source: Path) -> dict[str, Any]:
    """Every sensor family at toy size, fixed epochs (no wall-clock budget), so that a rerun trains
    bit-identical encoders and must hit the feature cache."""
    quick = {"epochs": 1, "batch_size": 16, "lr": 1e-3, "threads": 1}
    return {
        "name": "tiny-counter-drone",
        "data": {"source": str(source), "format": "multisensor", "simulate": {"count": 120, "seed": 3}},
        "sensors": {
            "optical": {"model": {"architecture": "test_efficientnet", "input_size": 32}, "training": quick},
            "rf": {"model": {"family": "rf_cnn_transformer", "architecture": "small"}, "training": quick},
            "radar": {"model": {"family": "radar_sequence", "architecture": "gru"}, "training": quick},
            "acoustic": {"model": {"family": "acoustic_crepe", "architecture": "tiny"}, "training": quick},
        },
        "fusion": {"width": 16, "heads": 2, "depth": 1, "training": {"epochs": 2, "batch_size": 16, "threads": 1}},
        "evaluation": {"gates": [{"metric": "fusion_test_accuracy", "min": 0.0}]},
        "export": {
            "latency_runs": 100,
            "latency_warmup": 1,
            "quantization": {"samples": 32},
            "gates": [{"metric": "system_accuracy_drop", "max": 1.0}],
        },
        "tracking": {"experiment": "tiny-counter-drone"},
    }


def _run(plan_path: Path, out: Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "rooivalk.cli.app", "run", str(plan_path), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return json.loads((out / "summary.json").read_text())  # type: ignore[no-any-return]


def test_counter_drone_pipeline_end_to_end_then_a_rerun_reads_every_feature_from_the_cache(tmp_path: Path) -> None:
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(tiny_counter_drone_plan(tmp_path / "events"), sort_keys=False))
    out = tmp_path / "run"
    summary = _run(plan_path, out)

    assert summary["pipeline"] == "rooivalk-multisensor"
    assert list(summary["steps"]) == multisensor_steps(SENSORS)
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
    version = client.get_model_version_by_alias("tiny-counter-drone", "champion")
    assert version.tags["rooivalk.features_key"] == features_key
    assert version.tags["rooivalk.sensors"] == ",".join(sorted(SENSORS))

    again = _run(plan_path, out)  # same --out: same feature cache; same seeds: same encoders
    assert again["steps"]["cache_features"]["metrics"]["encoder_forward_passes"] == 0
    assert again["steps"]["cache_features"]["features_key"] == features_key
