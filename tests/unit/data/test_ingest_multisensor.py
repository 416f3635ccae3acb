"""Multi-sensor ingestion: missing samples masked and reported, bad samples quarantined with their path."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from rooivalk.data.dataset_card import CARD_FILE
from rooivalk.data.dataset_card_schema import DatasetCard
from rooivalk.data.ingest import IngestError
from rooivalk.data.ingest_multisensor import ingest_multisensor
from rooivalk.data.multisensor_dataset import is_multisensor, load_multisensor
from rooivalk.data.simulators.counter_drone import simulate_counter_drone
from rooivalk.plan import DataSpec

SENSORS = ["optical", "rf", "radar", "acoustic"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    simulate_counter_drone(str(root / "events"), 60, seed=1, image_size=16)
    return root / "events"


def _spec(source) -> DataSpec:
    return DataSpec(source=str(source), format="multisensor", split={"train": 0.6, "val": 0.2, "test": 0.2})


def _rewrite_index(source, edit) -> None:
    frame = pd.read_parquet(source / "events.parquet")
    edit(frame)
    frame.to_parquet(source / "events.parquet", index=False)


def test_ingests_every_sensor_with_splits_and_a_version(simulated, tmp_path):
    result = ingest_multisensor(_spec(simulated), str(tmp_path / "ds"), SENSORS)
    dataset = load_multisensor(str(tmp_path / "ds"))
    assert is_multisensor(str(tmp_path / "ds"))
    assert dataset.present.all()
    assert result.quarantined == []
    assert result.missing == dict.fromkeys(SENSORS, 0)
    assert dataset.arrays["optical"].shape == (60, 16, 16)
    assert dataset.arrays["rf"].dtype == np.complex64
    assert sum(dataset.info.split_sizes.values()) == 60
    assert dataset.info.version_id.startswith("ds-")
    view = dataset.image_view("optical")
    assert view.images.shape == (60, 16, 16, 1)
    assert view.info.split_sizes == dataset.info.split_sizes


def test_version_does_not_depend_on_index_order(simulated, tmp_path):
    first = ingest_multisensor(_spec(simulated), str(tmp_path / "a"), SENSORS).info.version_id
    shuffled = tmp_path / "shuffled"
    shutil.copytree(simulated, shuffled)
    frame = pd.read_parquet(shuffled / "events.parquet")
    frame.iloc[::-1].to_parquet(shuffled / "events.parquet", index=False)
    assert ingest_multisensor(_spec(shuffled), str(tmp_path / "b"), SENSORS).info.version_id == first


def test_missing_sample_is_masked_and_wrong_shape_is_quarantined_with_its_path(simulated, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(simulated, source)
    np.save(source / "bad_rf.npy", np.zeros(100, dtype=np.complex64))  # wrong length
    np.save(source / "bad_radar.npy", np.zeros((32, 8), dtype=np.float64))  # wrong dtype

    def edit(frame):
        frame.loc[0, "acoustic"] = None  # the microphone was down
        frame.loc[1, "optical"] = "optical/nowhere/missing.png"  # file gone
        frame.loc[2, "rf"] = "bad_rf.npy"
        frame.loc[3, "radar"] = "bad_radar.npy"
        for sensor in SENSORS:  # event 4 has nothing at all
            frame.loc[4, sensor] = None

    _rewrite_index(source, edit)
    result = ingest_multisensor(_spec(source), str(tmp_path / "ds"), SENSORS)
    dataset = load_multisensor(str(tmp_path / "ds"))
    assert dataset.info.num_events == 59  # event 4 quarantined whole, the others kept
    reasons = {entry["origin"]: entry["reason"] for entry in result.quarantined}
    assert "(100,) complex64" in reasons[f"{source}/bad_rf.npy"]
    assert "float64" in reasons[f"{source}/bad_radar.npy"]
    assert any("no usable sensor sample" in reason for reason in reasons.values())
    assert result.missing["acoustic"] == 2
    assert result.missing["rf"] == 2
    assert result.missing["optical"] == 2
    assert dataset.present.sum(axis=0).tolist() == [58, 58, 58, 58]
    saved = json.loads((tmp_path / "ds" / "quarantine.json").read_text())
    assert len(saved) == 3
    card = DatasetCard.model_validate_json((tmp_path / "ds" / CARD_FILE).read_text())
    assert (card.kind, card.counts.unit, card.counts.total, card.quarantine.count) == ("multisensor", "events", 59, 3)
    assert card.missing_modalities is not None  # of the 59 kept events (event 4 is quarantined whole)
    assert {sensor: sum(per.values()) for sensor, per in card.missing_modalities.items()} == dict.fromkeys(SENSORS, 1)


def test_bad_index_errors_name_the_file(tmp_path):
    with pytest.raises(IngestError, match="no events.parquet"):
        ingest_multisensor(_spec(tmp_path), str(tmp_path / "ds"), SENSORS)
    buffer = io.BytesIO()
    pd.DataFrame({"event_id": ["a", "a"], "label": ["bird", "bird"], "optical": ["x", "y"]}).to_parquet(buffer)
    (tmp_path / "events.parquet").write_bytes(buffer.getvalue())
    with pytest.raises(IngestError, match=r"events.parquet: duplicate event_id"):
        ingest_multisensor(_spec(tmp_path), str(tmp_path / "ds"), ["optical"])
    (tmp_path / "events.parquet").write_bytes(b"not parquet")
    with pytest.raises(IngestError, match="not a readable Parquet file"):
        ingest_multisensor(_spec(tmp_path), str(tmp_path / "ds"), ["optical"])
