"""Batch drift check on synthetic shifts: the flagged columns are the shifted ones; same-distribution
data rarely raises a dataset-drift verdict; bad production data is refused naming the column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rooivalk.cli.app import app
from rooivalk.evaluation.profile import BadBatch, check_frame
from rooivalk.monitoring.drift import FALSE_ALARM_TOLERANCE, check_drift, run_drift_check
from rooivalk.plan import MonitoringSpec
from tests.unit.monitoring.synthetic import NUMERIC, make_data, save_reference


def _check(current_kwargs: dict, rows: int = 2000, seed: int = 1, spec: MonitoringSpec | None = None):  # type: ignore[no-untyped-def]
    reference, info = make_data(2000, seed=0, embedding_dim=current_kwargs.get("embedding_dim", 0))
    current, _ = make_data(rows, seed=seed, **current_kwargs)
    embeddings = bool(current_kwargs.get("embedding_dim"))
    return check_drift(
        check_frame(info, reference, "reference", embeddings),
        check_frame(info, current, "current", embeddings),
        info,
        spec or MonitoringSpec(),
        embeddings=embeddings,
    )


@pytest.mark.parametrize(
    ("shift", "expected"),
    [
        ({"mean_shift": {"x0": 0.5, "x1": 0.5, "x2": 0.5, "x3": 0.5}}, {"x0", "x1", "x2", "x3"}),  # mean shift
        ({"scale": {"x4": 2.0}}, {"x4"}),  # variance change
        ({"mix": (0.2, 0.3, 0.5)}, {"prediction"}),  # category mix change (prediction drift)
        ({"mean_shift": {"x5": 1.0}, "scale": {"x1": 0.4}}, {"x1", "x5"}),  # a subset of columns
    ],
)
def test_flagged_columns_are_the_shifted_ones(shift: dict, expected: set[str]) -> None:
    result = _check(shift)
    assert set(result.drifted_columns()) == expected
    assert result.drift_share == pytest.approx(len(expected) / (len(NUMERIC) + 2))
    assert result.dataset_drift == (result.drift_share >= 0.5)
    assert result.retrain == result.dataset_drift
    assert result.prediction_drift == ("prediction" in expected)


def test_mean_shift_in_most_columns_is_dataset_drift_and_asks_for_retraining() -> None:
    result = _check({"mean_shift": dict.fromkeys(NUMERIC, 0.5)})
    assert result.dataset_drift
    assert result.retrain
    assert "75% of columns drifted" in result.reason


def test_same_distribution_false_alarm_rate_is_within_the_detectors_target() -> None:
    alarms = [_check({}, rows=600, seed=100 + trial).dataset_drift for trial in range(20)]  # 100: benchmarks/drift.py
    rate = float(np.mean(alarms))
    print(f"false alarm rate over 20 same-distribution trials (600 vs 2000 rows): {rate:.2%}")
    assert rate <= FALSE_ALARM_TOLERANCE


@pytest.mark.slow
def test_embedding_drift_is_found_by_the_classifier_and_asks_for_retraining() -> None:
    drifted = _check({"embedding_dim": 32, "embedding_shift": 0.5})
    assert drifted.columns["embeddings:optical"].drifted
    assert drifted.retrain
    assert not drifted.dataset_drift
    assert "embedding drift" in drifted.reason
    same = _check({"embedding_dim": 32})
    assert not same.columns["embeddings:optical"].drifted
    assert not same.retrain


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns=["x2"]), r"missing column\(s\) \['x2'\]"),
        (lambda f: f.assign(extra=1.0), r"unexpected column\(s\) \['extra'\]"),
        (lambda f: f.assign(x1="high"), "column 'x1' must be numbers"),
        (lambda f: f.assign(x3=np.where(np.arange(len(f)) == 5, np.nan, f["x3"])), "'x3' has NaN or infinite"),
        (lambda f: f.assign(x4=np.inf), "'x4' has NaN or infinite"),
    ],
)
def test_bad_production_data_is_refused_naming_the_column(change, message: str) -> None:  # type: ignore[no-untyped-def]
    current, info = make_data(50, seed=3)
    with pytest.raises(BadBatch, match=message):
        check_frame(info, change(current), "batch.parquet")


def test_rooivalk_drift_writes_report_and_json_and_exits_3_on_drift(tmp_path: Path) -> None:
    reference = save_reference(tmp_path / "reference")
    drifted, _ = make_data(2000, seed=5, mean_shift=dict.fromkeys(NUMERIC, 0.6))
    drifted.to_parquet(tmp_path / "drifted.parquet")
    same, _ = make_data(2000, seed=6)
    same.to_csv(tmp_path / "same.csv", index=False)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "drift",
            "--reference",
            reference,
            "--current",
            str(tmp_path / "drifted.parquet"),
            "--out",
            str(tmp_path / "a"),
        ],
    )
    assert result.exit_code == 3, result.output
    verdict = json.loads((tmp_path / "a" / "drift.json").read_text())
    assert verdict["dataset_drift"]
    assert verdict["retrain"]
    assert set(verdict["columns"]["x0"]) == {"drifted", "score", "method", "threshold"}
    assert (tmp_path / "a" / "drift_report.html").stat().st_size > 10_000
    result = runner.invoke(
        app, ["drift", "--reference", reference, "--current", str(tmp_path / "same.csv"), "--out", str(tmp_path / "b")]
    )
    assert result.exit_code == 0, result.output
    assert not json.loads((tmp_path / "b" / "drift.json").read_text())["retrain"]


def test_rooivalk_drift_names_the_file_and_column_of_bad_input(tmp_path: Path) -> None:
    reference = save_reference(tmp_path / "reference", rows=200)
    bad, _ = make_data(100, seed=5)
    bad.drop(columns=["confidence"]).to_parquet(tmp_path / "bad.parquet")
    result = CliRunner().invoke(
        app,
        ["drift", "--reference", reference, "--current", str(tmp_path / "bad.parquet"), "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 2
    assert "bad.parquet: missing column(s) ['confidence']" in result.output.replace("\n", "")  # rich wraps lines
    assert not (tmp_path / "o" / "drift.json").exists()


def test_run_drift_check_refuses_a_reference_that_is_not_a_profile(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="not a reference profile"):
        run_drift_check(MonitoringSpec(), str(tmp_path), str(tmp_path / "x.parquet"), str(tmp_path / "out"))
