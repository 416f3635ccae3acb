"""Re-scoring a table champion on a newer dataset version (rooivalk.evaluation.rescore.model_test_metrics):
its columns are taken by name, categories its training split never had are unseen, and a dataset that
lacks one of its features makes the champion unscorable (RescoreUnavailable), never mis-scored."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rooivalk.data import ingest_data
from rooivalk.data.simulators.attribution import simulate_attribution
from rooivalk.evaluation.rescore import model_test_metrics
from rooivalk.plan import load_plan
from rooivalk.tracking.promotion import RescoreUnavailable
from rooivalk.training import train_model

PLAN = Path(__file__).resolve().parents[3] / "pipelines" / "plans" / "attribution.yaml"
QUICK = ["training.threads=1", "training.epochs=2", "model.architecture=16-8", "ensemble=null", "evaluation.gates=[]"]


def test_a_table_champion_is_rescored_by_column_name_and_category_name(tmp_path: Path) -> None:
    table = simulate_attribution(str(tmp_path / "a" / "events.csv"), 160, seed=1).table_uri
    plan = load_plan(PLAN, [f"data.source={table}", "data.simulate=null", *QUICK])
    ingest_data(plan.data, str(tmp_path / "ds"))
    train_model(plan, str(tmp_path / "ds"), str(tmp_path / "model"))
    own = model_test_metrics(plan, str(tmp_path / "ds"), str(tmp_path / "model"))

    frame = pd.read_csv(table)
    shuffled = frame[["label", "id", *reversed(list(frame.columns[2:]))]]  # same rows, other column order
    shuffled.to_csv(tmp_path / "b.csv", index=False)
    newer = load_plan(PLAN, [f"data.source={tmp_path / 'b.csv'}", "data.simulate=null", *QUICK])
    ingest_data(newer.data, str(tmp_path / "ds-b"))
    assert model_test_metrics(newer, str(tmp_path / "ds-b"), str(tmp_path / "model")) == own

    frame.loc[frame["rf_band"] == "2.4GHz", "rf_band"] = "60GHz"  # a band the champion never saw
    frame.to_csv(tmp_path / "c.csv", index=False)
    renamed = load_plan(PLAN, [f"data.source={tmp_path / 'c.csv'}", "data.simulate=null", *QUICK])
    ingest_data(renamed.data, str(tmp_path / "ds-c"))
    scored = model_test_metrics(renamed, str(tmp_path / "ds-c"), str(tmp_path / "model"))
    assert 0.0 <= scored["test_accuracy"] <= 1.0

    frame.drop(columns=["speed_mps"]).to_csv(tmp_path / "d.csv", index=False)
    lacking = load_plan(PLAN, [f"data.source={tmp_path / 'd.csv'}", "data.simulate=null", *QUICK])
    ingest_data(lacking.data, str(tmp_path / "ds-d"))
    with pytest.raises(RescoreUnavailable, match=r"lacks the model's feature\(s\) \['speed_mps'\]"):
        model_test_metrics(lacking, str(tmp_path / "ds-d"), str(tmp_path / "model"))
