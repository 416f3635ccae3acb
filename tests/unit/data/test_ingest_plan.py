"""The ingest step's entry point for array formats (rooivalk.data.ingest_plan): `data.simulate` writes
the source when it is missing or was simulated with other settings, never over a user's own file; a
missing source is named; every format writes quarantine.json and class_balance.png beside the dataset;
a bad numeric cell of a table quarantines its row (file, row, column) and nothing else; `data.features`
picks the features."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rooivalk.data import IngestError, ingest_data
from rooivalk.data.ingest_plan import simulate_source
from rooivalk.data.sequence_dataset import SequenceIngestResult, load_sequence_dataset
from rooivalk.data.simulators.attribution import NUMERIC_FEATURES, simulate_attribution
from rooivalk.data.simulators.sign_language import FEATURES as LANDMARK_FEATURES
from rooivalk.data.table_dataset import TableIngestResult, load_table_dataset
from rooivalk.plan import DataSpec, SimulationSpec

SIGNS = {"kind": "sign_language", "count": 60, "num_classes": 3, "min_length": 5, "max_length": 8}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sequences_spec(source: Path, simulate: dict[str, Any] | None = SIGNS, **changes: Any) -> DataSpec:
    return DataSpec.model_validate(
        {
            "source": str(source),
            "format": "sequences",
            "simulate": simulate,
            "sequence": {"length": 6, "step": "step"},
            **changes,
        }
    )


def table_spec(source: Path, **changes: Any) -> DataSpec:
    return DataSpec.model_validate({"source": str(source), "format": "table", **changes})


def fingerprint(path: Path) -> tuple[int, bytes]:
    return os.stat(path).st_mtime_ns, path.read_bytes()


def assert_reports_written(dataset_dir: Path) -> list[dict[str, Any]]:
    assert (dataset_dir / "class_balance.png").read_bytes().startswith(PNG_MAGIC)
    assert (dataset_dir / "dataset.json").is_file()
    quarantine: list[dict[str, Any]] = json.loads((dataset_dir / "quarantine.json").read_text())
    return quarantine


def test_a_missing_simulated_source_is_simulated_and_ingested(tmp_path: Path) -> None:
    source = tmp_path / "data" / "signs.parquet"
    result = ingest_data(sequences_spec(source), str(tmp_path / "ds"))
    assert isinstance(result, SequenceIngestResult)
    meta = json.loads((source.parent / "simulation.json").read_text())
    assert (meta["count"], meta["num_classes"], meta["min_length"], meta["max_length"]) == (60, 3, 5, 8)
    frame = pd.read_parquet(source)
    assert frame["sequence_id"].nunique() == 60
    info = result.info
    assert (info.num_sequences, info.classes, info.length) == (60, ["A", "B", "C"], 6)
    assert info.feature_names == LANDMARK_FEATURES
    assert info.truncated == int((frame.groupby("sequence_id").size() > 6).sum()) > 0
    assert sum(info.split_sizes.values()) == 60
    assert result.metrics["num_features"] == 63.0
    assert assert_reports_written(tmp_path / "ds") == []


def test_an_unchanged_simulation_is_not_written_again(tmp_path: Path) -> None:
    source = tmp_path / "signs.parquet"
    spec = sequences_spec(source)
    first = ingest_data(spec, str(tmp_path / "ds1"))
    before, meta_before = fingerprint(source), fingerprint(tmp_path / "simulation.json")
    second = ingest_data(spec, str(tmp_path / "ds2"))
    assert fingerprint(source) == before
    assert fingerprint(tmp_path / "simulation.json") == meta_before
    assert second.info.version_id == first.info.version_id
    assert spec.simulate is not None
    assert simulate_source(str(source), spec.simulate) is False


@pytest.mark.parametrize(("change", "value", "sequences"), [("count", 90, 90), ("seed", 1, 60), ("max_length", 10, 60)])
def test_other_simulation_settings_simulate_again(change: str, value: int, sequences: int, tmp_path: Path) -> None:
    source = tmp_path / "signs.parquet"
    first = ingest_data(sequences_spec(source), str(tmp_path / "ds1"))
    _, old_bytes = fingerprint(source)
    second = ingest_data(sequences_spec(source, {**SIGNS, change: value}), str(tmp_path / "ds2"))
    assert source.read_bytes() != old_bytes
    assert json.loads((tmp_path / "simulation.json").read_text())[change] == value
    assert second.info.num_sequences == sequences
    assert second.info.version_id != first.info.version_id


def test_simulate_source_reports_whether_it_simulated(tmp_path: Path) -> None:
    source = str(tmp_path / "events.csv")
    assert simulate_source(source, SimulationSpec(kind="attribution", count=40)) is True
    assert len(pd.read_csv(source)) == 40
    assert simulate_source(source, SimulationSpec(kind="attribution", count=40)) is False
    assert simulate_source(source, SimulationSpec(kind="attribution", count=40, seed=2)) is True
    assert json.loads((tmp_path / "simulation.json").read_text())["seed"] == 2
    with pytest.raises(IngestError, match="data.simulate.kind counter_drone writes multisensor data"):
        simulate_source(str(tmp_path / "x.parquet"), SimulationSpec(kind="counter_drone"))


def user_sequences(path: Path, count: int = 30) -> None:
    """A user's own long-form file: 3 classes, 4 features a..d, lengths 5..9."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(count):
        label = ["walk", "run", "jump"][index % 3]
        for step in range(int(rng.integers(5, 10))):
            values = rng.normal(index % 3, 1.0, 4)
            rows.append(
                {"sequence_id": f"s{index}", "label": label, "step": step, **dict(zip("abcd", values, strict=True))}
            )
    pd.DataFrame(rows).to_csv(path, index=False)


def test_a_users_own_file_is_never_overwritten_by_the_simulator(tmp_path: Path) -> None:
    source = tmp_path / "mine.csv"
    user_sequences(source)
    before = fingerprint(source)
    result = ingest_data(sequences_spec(source, {**SIGNS, "count": 90}), str(tmp_path / "ds"))
    assert fingerprint(source) == before
    assert not (tmp_path / "simulation.json").exists()
    assert result.info.feature_names == ["a", "b", "c", "d"]
    assert (result.info.num_sequences, result.info.classes) == (30, ["jump", "run", "walk"])


def test_a_missing_source_without_simulate_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "signs.parquet"
    with pytest.raises(IngestError, match=f"data source not found: {missing}"):
        ingest_data(sequences_spec(missing, None), str(tmp_path / "ds"))
    with pytest.raises(IngestError, match=f"data source not found: {tmp_path / 'rows.csv'}"):
        ingest_data(table_spec(tmp_path / "rows.csv"), str(tmp_path / "ds"))
    assert not missing.parent.exists()
    assert not (tmp_path / "ds" / "dataset.json").exists()


def test_a_simulated_table_is_ingested_with_its_reports(tmp_path: Path) -> None:
    source = tmp_path / "events.parquet"
    spec = table_spec(source, simulate={"kind": "attribution", "count": 120})
    result = ingest_data(spec, str(tmp_path / "ds"), quarantine_uri=str(tmp_path / "q" / "quarantine.json"))
    assert isinstance(result, TableIngestResult)
    assert result.info.num_rows == 120
    assert result.info.numeric_features == NUMERIC_FEATURES
    assert assert_reports_written(tmp_path / "ds") == []
    assert json.loads((tmp_path / "q" / "quarantine.json").read_text()) == []  # and where the caller asked


def test_a_bad_numeric_cell_quarantines_its_row_and_nothing_else(tmp_path: Path) -> None:
    simulated = simulate_attribution(str(tmp_path / "sim" / "events.csv"), 120).table_uri
    frame = pd.read_csv(simulated).astype({"speed_mps": object})
    frame.loc[7, "speed_mps"] = "fast"
    source = tmp_path / "events.csv"  # no simulation.json beside it, no simulate: the user's table
    frame.to_csv(source, index=False)
    quarantine_uri = tmp_path / "reports" / "quarantine.json"
    result = ingest_data(table_spec(source), str(tmp_path / "ds"), quarantine_uri=str(quarantine_uri))
    bad_id = frame.loc[7, "id"]
    expected = [
        {
            "origin": str(source),
            "reason": "non-numeric value 'fast' in numeric column 'speed_mps'",
            "sequence_id": bad_id,
            "row": 7,
            "column": "speed_mps",
        }
    ]
    assert assert_reports_written(tmp_path / "ds") == expected
    assert json.loads(quarantine_uri.read_text()) == expected
    assert result.quarantined == expected
    assert (result.info.num_rows, result.info.quarantined, result.metrics["num_quarantined"]) == (119, 1, 1.0)
    rows = pd.read_csv(tmp_path / "ds" / "rows.csv", dtype=str)
    assert sorted(rows["id"]) == sorted(frame["id"].drop(index=7))  # every other row kept
    dataset = load_table_dataset(str(tmp_path / "ds"))
    kept = frame.drop(index=7).set_index("id")
    speed = dataset.info.numeric_features.index("speed_mps")
    for row in rows.itertuples():
        assert dataset.features[int(row.index), speed] == np.float32(kept.loc[row.id, "speed_mps"])


def test_data_features_restricts_and_orders_the_features(tmp_path: Path) -> None:
    signs = ingest_data(
        sequences_spec(tmp_path / "s" / "signs.parquet", features=["z0", "x0", "y20"]), str(tmp_path / "ds1")
    )
    assert signs.info.feature_names == ["z0", "x0", "y20"]
    assert load_sequence_dataset(str(tmp_path / "ds1")).sequences.shape[1:] == (6, 3)
    spec = table_spec(
        tmp_path / "t" / "events.parquet",
        simulate={"kind": "attribution", "count": 120},
        features=["altitude_m", "rf_band", "speed_mps"],
    )
    table = ingest_data(spec, str(tmp_path / "ds2"))
    assert isinstance(table, TableIngestResult)
    assert table.info.numeric_features == ["altitude_m", "speed_mps"]
    assert [feature.name for feature in table.info.categorical_features] == ["rf_band"]
    assert load_table_dataset(str(tmp_path / "ds2")).features.shape == (120, 2)


def test_a_folder_source_simulated_with_other_settings_is_simulated_again(tmp_path: Path) -> None:
    source = tmp_path / "signs"  # a folder: the simulator writes sequences.parquet and simulation.json in it
    assert simulate_source(str(source), SimulationSpec.model_validate(SIGNS)) is True
    assert (source / "simulation.json").is_file()
    assert simulate_source(str(source), SimulationSpec.model_validate({**SIGNS, "count": 90})) is True
    assert json.loads((source / "simulation.json").read_text())["count"] == 90


def test_a_users_file_beside_another_simulated_table_is_not_overwritten(tmp_path: Path) -> None:
    assert simulate_source(str(tmp_path / "simulated.parquet"), SimulationSpec.model_validate(SIGNS)) is True
    source = tmp_path / "mine.csv"
    user_sequences(source)
    before = source.read_bytes()
    simulate_source(str(source), SimulationSpec.model_validate({**SIGNS, "count": 90}))
    assert source.read_bytes() == before
