"""The sequence and table example plans through `rooivalk run` (kfp.local, MLflow on sqlite), at tiny
scale: pipelines/plans/sign_language.yaml (simulated hand-landmark sequences, a GRU) and
pipelines/plans/attribution.yaml (simulated attribution table, XGBoost + MLP ensemble). Then each plan
pointed at a user's own file by changing data.source only: other features, names, kinds, lengths and
classes, with bad rows quarantined."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from rooivalk.export import Predictor

REPO = Path(__file__).resolve().parents[2]
SIGN_LANGUAGE = REPO / "pipelines" / "plans" / "sign_language.yaml"
ATTRIBUTION = REPO / "pipelines" / "plans" / "attribution.yaml"

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Tiny scale: what CI can afford; the plans' own figures are measured by benchmarks/ and docs/results.
COMMON = [
    "evaluation.gates=[]",
    "export.latency_runs=100",
    "export.latency_warmup=1",
    "training.threads=1",
]
SIGN_TINY = [
    *COMMON,
    "data.simulate.count=120",
    "data.simulate.num_classes=4",
    "data.simulate.min_length=8",
    "data.simulate.max_length=14",
    "data.sequence.length=12",
    "model.architecture=gru-16x2",
    "training.stages.0.epochs=2",
    "training.stages.1.epochs=1",
]
ATTRIBUTION_TINY = [*COMMON, "data.simulate.count=240", "training.epochs=2", "ensemble.xgboost.trees=10"]


def _run(plan: Path, out: Path, overrides: list[str]) -> dict[str, Any]:
    sets = [arg for override in overrides for arg in ("--set", override)]
    result = subprocess.run(
        [sys.executable, "-m", "rooivalk.cli.app", "run", str(plan), "--out", str(out), *sets],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert list(summary["steps"]) == ["ingest_data", "train_model", "evaluate_model", "export_model", "register_model"]
    return summary


def _step_file(out: Path, step: str, name: str) -> Path:
    (found,) = sorted((out / "pipeline_root").glob(f"*/{step}/**/{name}"))
    return found


def _bundle(out: Path) -> Predictor:
    return Predictor.load(str(_step_file(out, "export-model", "bundle.json").parent))


def test_sign_language_plan_runs_and_its_bundle_takes_raw_sequences_of_any_length(tmp_path: Path) -> None:
    source = tmp_path / "data" / "signs.parquet"
    out = tmp_path / "run"
    summary = _run(SIGN_LANGUAGE, out, [f"data.source={source}", *SIGN_TINY])
    assert source.is_file()
    assert (source.parent / "simulation.json").is_file()  # simulated where the plan says
    metrics = summary["steps"]["train_model"]["metrics"]
    assert metrics["num_stages"] == 2
    assert metrics["num_features"] == 63
    report = json.loads(_step_file(out, "evaluate-model", "evaluation.json").read_text())
    assert len(report["classes"]) == 4
    predictor = _bundle(out)
    assert predictor.info.preprocessing["kind"] == "sequence"
    assert predictor.info.preprocessing["length"] == 12
    frame = pd.read_parquet(source)
    groups = [group for _, group in frame.groupby("sequence_id", sort=False)][:20]
    raw = [group[predictor.info.preprocessing["features"]].to_numpy() for group in groups]
    assert len({len(sequence) for sequence in raw}) > 1  # ragged, some longer than the trained 12 frames
    probabilities = predictor.predict_proba(raw)
    assert probabilities.shape == (20, 4)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    registered = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}").search_model_versions(
        "name='sign-language'"
    )
    assert len(registered) == 1


def test_attribution_plan_scores_each_member_and_ships_one_ensemble_graph(tmp_path: Path) -> None:
    source = tmp_path / "data" / "events.csv"
    out = tmp_path / "run"
    summary = _run(ATTRIBUTION, out, [f"data.source={source}", *ATTRIBUTION_TINY])
    train = summary["steps"]["train_model"]["metrics"]
    assert train["ensemble_weight_xgboost"] == pytest.approx(0.6)
    assert 1 <= train["xgboost_rounds"] <= 10
    report = json.loads(_step_file(out, "evaluate-model", "evaluation.json").read_text())
    assert list(report["ensemble"]["scores"]) == ["model", "xgboost", "ensemble"]
    evaluate = summary["steps"]["evaluate_model"]["metrics"]
    assert {"test_member_model_accuracy", "test_member_xgboost_accuracy"} <= set(evaluate)
    export = json.loads(_step_file(out, "export-model", "export_report.json").read_text())
    assert export["verification"]["ensemble"]["max_abs_diff"] < 1e-4
    predictor = _bundle(out)
    rows = pd.read_csv(source).head(30)
    rows.loc[0, "rf_band"] = "60GHz"  # a band the training split never had
    labels = predictor.predict(rows)
    assert len(labels) == 30
    assert set(labels) <= set(predictor.info.labels)
    assert predictor.unseen["rf_band"] == 1
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    (version,) = client.search_model_versions("name='attribution'")
    assert json.loads(version.tags["rooivalk.ensemble"]) == pytest.approx({"xgboost": 0.6, "model": 0.4})
    import mlflow.xgboost

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    try:  # MLflow's own xgboost flavor, by the URI the registered version's tag gives
        booster = mlflow.xgboost.load_model(version.tags["rooivalk.ensemble_xgboost"])
    finally:
        mlflow.set_tracking_uri(previous)
    assert booster.num_boosted_rounds() == train["xgboost_best_iteration"] + 1


def test_a_variant_ensemble_of_the_sign_language_plan_runs_and_ships_one_graph(tmp_path: Path) -> None:
    source = tmp_path / "data" / "signs.parquet"
    out = tmp_path / "run"
    members = "variants.members=[{}, {training.seed: 1, model.architecture: gru-8x1}]"
    overrides = [f"data.source={source}", *SIGN_TINY, "export.precisions=[fp32]", members]
    summary = _run(SIGN_LANGUAGE, out, overrides)
    train = summary["steps"]["train_model"]["metrics"]
    assert train["variant_members"] == 2
    assert train["best_val_accuracy"] == train["ensemble_val_accuracy"]
    report = json.loads(_step_file(out, "evaluate-model", "evaluation.json").read_text())
    assert list(report["ensemble"]["scores"]) == ["0", "1", "ensemble"]
    assert {"test_member_0_accuracy", "test_member_1_log_loss"} <= set(summary["steps"]["evaluate_model"]["metrics"])
    export = json.loads(_step_file(out, "export-model", "export_report.json").read_text())
    assert export["verification"]["variants"]["ensemble"]["max_abs_diff"] < 1e-5
    predictor = _bundle(out)
    frame = pd.read_parquet(source)
    raw = [group[predictor.info.preprocessing["features"]].to_numpy() for _, group in frame.groupby("sequence_id")]
    np.testing.assert_allclose(predictor.predict_proba(raw[:10]).sum(1), 1.0, atol=1e-5)
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    (version,) = client.search_model_versions("name='sign-language'")
    recorded = json.loads(version.tags["rooivalk.variants"])
    assert [member["overrides"] for member in recorded] == [{}, {"training.seed": 1, "model.architecture": "gru-8x1"}]


def test_changing_data_source_alone_points_each_plan_at_a_users_own_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for index in range(60):  # 3 classes, 4 features named as the user likes, lengths 5..11
        label = ["walk", "run", "jump"][index % 3]
        length = int(rng.integers(5, 12))
        values = rng.normal(index % 3, 1.0, (length, 4))
        for step in range(length):
            rows.append({"sequence_id": f"s{index}", "label": label, **dict(zip("abcd", values[step], strict=True))})
    rows.append({"sequence_id": "bad", "label": "walk", "a": float("nan"), "b": 0.0, "c": 0.0, "d": 0.0})
    sequences = tmp_path / "mine.csv"
    pd.DataFrame(rows).to_csv(sequences, index=False)
    summary = _run(SIGN_LANGUAGE, tmp_path / "seq", [f"data.source={sequences}", *SIGN_TINY])
    assert summary["steps"]["ingest_data"]["metrics"]["num_quarantined"] == 1
    assert summary["steps"]["train_model"]["metrics"]["num_features"] == 4
    assert pd.read_csv(sequences).shape[0] == len(rows)  # the user's file is never overwritten by the simulator

    table = pd.DataFrame(
        {
            "label": ["low", "high"] * 40,
            "colour": ["red", "blue", "green", "red"] * 20,
            "size": rng.normal(0, 1, 80) + np.tile([0.0, 3.0], 40),
        }
    )
    table = table.astype({"size": object})
    table.loc[5, "size"] = "n/a"  # a non-numeric cell in a numeric column: quarantined, named
    table.to_csv(tmp_path / "mine.csv", index=False)
    summary = _run(ATTRIBUTION, tmp_path / "tab", [f"data.source={tmp_path / 'mine.csv'}", *ATTRIBUTION_TINY])
    assert summary["steps"]["ingest_data"]["metrics"]["num_quarantined"] == 1
    quarantine = json.loads(_step_file(tmp_path / "tab", "ingest-data", "quarantine.json").read_text())
    assert quarantine[0]["column"] == "size"
    assert quarantine[0]["row"] == 5  # 0-based data row (CSV line 7)
