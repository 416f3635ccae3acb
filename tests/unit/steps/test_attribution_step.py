"""The attribution step (rooivalk.steps.attribution_step): an error in training the attribution's table
plan names the key where the plan sets it, under attribution."""

from __future__ import annotations

from pathlib import Path

import pytest

from rooivalk.plan import load_plan
from rooivalk.steps.attribution_step import train_attribution

PLAN = Path(__file__).resolve().parents[3] / "pipelines" / "plans" / "counter_drone.yaml"


def test_a_teacher_that_is_not_a_model_is_refused_under_its_attribution_key(tmp_path: Path) -> None:
    plan = load_plan(
        PLAN,
        [
            f"attribution.data.source={tmp_path / 'events.parquet'}",
            "attribution.data.simulate.count=120",
            "attribution.model.architecture=16-8",
            "attribution.training.epochs=1",
            "attribution.ensemble=null",
            f"attribution.training.distillation={{teacher: {tmp_path / 'no-model'}}}",
        ],
    )
    with pytest.raises(ValueError, match=r"^attribution\.training\.distillation\.teacher: .*no-model is not a trained"):
        train_attribution(plan, str(tmp_path / "out"))
    assert not (tmp_path / "out" / "model" / "model.json").exists()  # nothing trained was left behind
