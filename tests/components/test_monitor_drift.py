"""monitor_drift's Python function on a tiny reference profile and production batch (no KFP run)."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from kfp import dsl

from rooivalk.evaluation.profile import build_profile, save_profile
from rooivalk.monitoring.drift import DRIFT_JSON, REPORT_HTML
from rooivalk_kfp.components.monitor_drift import monitor_drift
from tests.conftest import tiny_plan_dict

COLUMNS = [f"x{i}" for i in range(6)]
ROWS = 2000


def _normal(seed: int, shift: float = 0.0, shifted: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(shift if i < shifted else 0.0, 1.0, ROWS) for i, name in enumerate(COLUMNS)}


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    frame, info = build_profile(_normal(seed=0), {}, dataset_version="v-test", model="tiny")
    uri = str(tmp_path_factory.mktemp("reference") / "profile")
    save_profile(uri, frame, info)
    return uri


def _current(tmp_path: Path, **shift: Any) -> str:
    path = tmp_path / "current.parquet"
    pd.DataFrame(_normal(seed=1, **shift)).to_parquet(path, index=False)
    return str(path)


def _plan(reference_uri: str | None = None) -> dict[str, Any]:
    plan = tiny_plan_dict("unused")
    if reference_uri:
        plan["monitoring"] = {"reference_uri": reference_uri}
    return plan


def _outputs(tmp_path: Path) -> dict[str, Any]:
    return {
        "report": dsl.Artifact(uri=str(tmp_path / "report")),
        "html": dsl.HTML(uri=str(tmp_path / "report.html")),
        "metrics": dsl.Metrics(uri=str(tmp_path / "metrics")),
    }


def test_shift_in_four_of_six_columns_asks_for_retraining(tmp_path: Path, reference_dir: str) -> None:
    outputs = _outputs(tmp_path)
    current = _current(tmp_path, shift=0.5, shifted=4)
    retrain, reason = monitor_drift.python_func(
        plan=_plan(), reference_uri=reference_dir, current_uri=current, **outputs
    )
    assert retrain is True
    assert "x0" in reason
    metrics = outputs["metrics"].metadata
    assert metrics["dataset_drift"] == 1
    assert metrics["drifted_columns"] == 4
    assert metrics["drift_share"] == pytest.approx(4 / 6)
    report = tmp_path / "report"
    drift = json.loads((report / DRIFT_JSON).read_text())
    assert drift["retrain"] is True
    assert drift["current"] == current
    assert sorted(name for name, column in drift["columns"].items() if column["drifted"]) == COLUMNS[:4]
    assert (report / REPORT_HTML).read_bytes() == (tmp_path / "report.html").read_bytes()
    assert (tmp_path / "report.html").read_text().lstrip().lower().startswith("<!doctype html")


def test_same_distribution_does_not_retrain_and_the_plan_names_the_reference(
    tmp_path: Path, reference_dir: str
) -> None:
    outputs = _outputs(tmp_path)
    retrain, reason = monitor_drift.python_func(
        plan=_plan(reference_dir), reference_uri="", current_uri=_current(tmp_path), **outputs
    )
    assert retrain is False
    assert reason.startswith("no dataset drift")
    assert outputs["metrics"].metadata["dataset_drift"] == 0
    assert json.loads((tmp_path / "report" / DRIFT_JSON).read_text())["reference"] == reference_dir
    assert (tmp_path / "report.html").stat().st_size > 0


def test_no_reference_anywhere_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no reference profile: pass reference_uri or set monitoring.reference_uri"):
        monitor_drift.python_func(plan=_plan(), reference_uri="", current_uri=_current(tmp_path), **_outputs(tmp_path))
