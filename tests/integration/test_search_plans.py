"""The example search plan through `rooivalk search` at tiny scale: pipelines/plans/sign_language_search.yaml
(TPE over the GRU's cell, size, dropout and learning rate), its best plan written and valid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rooivalk.plan import validate_plan

REPO = Path(__file__).resolve().parents[2]
PLAN = REPO / "pipelines" / "plans" / "sign_language_search.yaml"

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = [
    "data.simulate.count=260",
    "training.threads=1",
    "training.stages.0.epochs=2",
    "training.stages.1.epochs=1",
    "training.early_stopping.enabled=false",
]


def test_the_sign_language_search_plan_runs_and_writes_its_best_plan(tmp_path: Path) -> None:
    out = tmp_path / "search"
    sets = [arg for override in [f"data.source={tmp_path / 'signs.parquet'}", *TINY] for arg in ("--set", override)]
    result = subprocess.run(
        [sys.executable, "-m", "rooivalk.cli.app", "search", str(PLAN), "--out", str(out), "--trials", "3", *sets],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "best: trial" in result.stdout
    report = json.loads((out / "search.json").read_text())
    assert [trial["number"] for trial in report["trials"]] == [0, 1, 2]
    assert report["objective"] == {"metric": "val_accuracy", "direction": "maximize"}
    best = yaml.safe_load((out / "best_plan.yaml").read_text())
    plan = validate_plan(best, origin="best_plan.yaml")
    assert plan.search is None
    assert plan.single_model.architecture == report["best"]["params"]["model.architecture"]
    assert plan.data.simulate is not None
    assert plan.data.simulate.count == 260  # the --set overrides travel into the best plan
