"""A plan that simulates its source reuses events simulated with its own settings and simulates again
when `data.simulate` changed, so an edited plan never trains on stale data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rooivalk.data.ingest_multisensor import ensure_source
from rooivalk.plan import Plan


def plan_for(source: Path, **simulate: Any) -> Plan:
    sensor = {"model": {"family": "radar_sequence", "architecture": "gru"}}
    return Plan.model_validate(
        {
            "name": "sim-source",
            "data": {
                "source": str(source),
                "format": "multisensor",
                "simulate": {"count": 10, "seed": 1, "image_size": 16, **simulate},
            },
            "sensors": {"radar": sensor},
            "fusion": {},
        }
    )


def test_events_are_simulated_once_and_again_only_when_the_settings_change(tmp_path: Path) -> None:
    source = tmp_path / "events"
    messages: list[str] = []

    def progress(event: dict[str, Any]) -> None:
        if event.get("event") == "message":
            messages.append(event["text"])

    ensure_source(plan_for(source), progress)
    assert json.loads((source / "simulation.json").read_text())["optical_field_px"] == 128
    index_written = (source / "events.parquet").stat().st_mtime_ns
    assert len(messages) == 1
    assert messages[0].startswith("simulating 10 events")

    ensure_source(plan_for(source), progress)  # same settings: reused as it is
    assert len(messages) == 1
    assert (source / "events.parquet").stat().st_mtime_ns == index_written

    ensure_source(plan_for(source, optical_field_px=16), progress)
    assert "simulated with other settings (optical_field_px 128 -> 16); simulating again" in messages[1]
    assert json.loads((source / "simulation.json").read_text())["optical_field_px"] == 16


def test_data_simulated_before_the_optical_field_existed_counts_as_the_default(tmp_path: Path) -> None:
    source = tmp_path / "events"
    ensure_source(plan_for(source))
    meta = json.loads((source / "simulation.json").read_text())
    del meta["optical_field_px"]  # what earlier versions wrote
    (source / "simulation.json").write_text(json.dumps(meta))
    messages: list[str] = []
    ensure_source(plan_for(source), lambda event: messages.append(str(event.get("text"))))
    assert messages == []  # still the default: nothing to redo
