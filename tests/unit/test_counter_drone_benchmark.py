"""benchmarks/counter_drone.py's specialist comparison on synthetic embeddings (its fits in
benchmarks.analysis.counter_drone, its tables in benchmarks.reports.counter_drone): a fusion trained
without a sensor must learn from the sensors left, and only from them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from benchmarks.analysis.counter_drone import airframe_probe, specialists
from benchmarks.reports.counter_drone import airframe_verdict, ceiling_table, probe_table, specialist_table
from rooivalk.data.dataset import SPLIT_CODES
from rooivalk.data.multisensor_dataset import MultiSensorDataset, MultiSensorInfo, SensorInfo
from rooivalk.models.fusion_inference import FusionFeatures
from rooivalk.plan import FusionSpec


def synthetic(count: int = 600) -> tuple[MultiSensorDataset, FusionFeatures]:
    """Sensor "signal" holds the label (a one-hot plus noise), sensor "noise" holds nothing."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, count)
    signal = np.eye(3, dtype=np.float32)[labels] * 3 + rng.normal(size=(count, 3)).astype(np.float32) * 0.3
    noise = rng.normal(size=(count, 4)).astype(np.float32)
    splits = np.array([SPLIT_CODES["train"]] * 400 + [SPLIT_CODES["val"]] * 100 + [SPLIT_CODES["test"]] * 100)
    sensors = ["signal", "noise"]
    info = MultiSensorInfo(
        version_id="ds-synthetic",
        source="memory",
        classes=["a", "b", "c"],
        sensors=[SensorInfo(name=name, shape=(1,), dtype="float32") for name in sensors],
        num_events=count,
        split_sizes={"train": 400, "val": 100, "test": 100},
        class_balance={},
        present={name: count for name in sensors},
        split_seed=0,
        quarantined=0,
    )
    present = np.ones((count, 2), dtype=bool)
    dataset = MultiSensorDataset(info, {}, present, labels.astype(np.int64), splits.astype(np.int8))
    return dataset, FusionFeatures({"signal": signal, "noise": noise}, present)


def test_a_specialist_learns_only_from_the_sensors_it_keeps() -> None:
    dataset, features = synthetic()
    spec = FusionSpec.model_validate(
        {"width": 16, "heads": 2, "depth": 1, "training": {"epochs": 15, "batch_size": 32, "lr": 3e-3, "threads": 1}}
    )
    found = specialists(spec, dataset, features, seeds=[0, 1])
    assert set(found) == {"signal", "noise"}
    assert found["noise"]["mean"] > 0.9  # trained without the noise sensor: the signal one carries it
    assert found["signal"]["mean"] < 0.55  # without the signal sensor: near chance (1/3)
    assert len(found["signal"]["runs"]) == 2
    assert features.present.all(), "the caller's presence mask must not change"

    table = specialist_table(found, {"signal": 0.40, "noise": 0.90})
    assert table[0].startswith("| sensor removed |")
    assert any(line.startswith("| noise | 90.0% |") for line in table)
    assert "worst specialist: without signal" in table[-1]


def test_the_airframe_probe_finds_the_airframe_only_where_an_embedding_holds_it() -> None:
    """Drones carry one of three airframes; sensor "sees" embeds it (one-hot plus noise), "blind" and
    "rf" hold noise. The probe reads the airframe from "sees" and from the non-RF sensors side by
    side, and "blind" scores near the majority airframe's share."""
    count = 900
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, count)  # 0 bird, 1 commercial_drone, 2 military_drone
    kinds = np.array(["quadcopter", "quadcopter_large", "fixed_wing"])
    airframe = np.where(labels == 0, "bird", kinds[rng.choice(3, count, p=[0.5, 0.3, 0.2])])
    codes = np.array([["bird", *kinds].index(a) for a in airframe])
    sees = np.eye(4, dtype=np.float32)[codes] * 3 + rng.normal(size=(count, 4)).astype(np.float32) * 0.3
    noise = {name: rng.normal(size=(count, 5)).astype(np.float32) for name in ("blind", "rf")}
    dataset, _ = synthetic(count)
    dataset = dataclasses.replace(
        dataset,
        labels=labels.astype(np.int64),
        splits=np.array(
            [SPLIT_CODES["train"]] * 600 + [SPLIT_CODES["val"]] * 100 + [SPLIT_CODES["test"]] * 200, dtype=np.int8
        ),  # fmt: skip
        info=dataset.info.model_copy(update={"classes": ["bird", "commercial_drone", "military_drone"]}),
    )
    present = np.ones((count, 3), dtype=bool)
    features = FusionFeatures({"sees": sees, **noise}, present)
    scenes = pd.DataFrame({"scene_airframe": airframe})

    probes = airframe_probe(dataset, features, scenes)

    test_drones = (dataset.splits == SPLIT_CODES["test"]) & (labels > 0)
    majority = float((airframe[test_drones] == "quadcopter").mean())
    assert probes["majority airframe"] == pytest.approx(majority)
    assert probes["sees"] > 0.95
    assert probes["all but rf"] > 0.9  # "sees" and "blind" side by side
    assert probes["blind"] < majority + 0.1
    assert probes["rf"] < majority + 0.1

    table = probe_table(probes, None)
    assert table[0] == "| embedding | airframe probe, test drones |"
    assert f"| all but rf | {100 * probes['all but rf']:.1f}% |" in table
    assert table[-1].startswith("| majority airframe |")


def test_the_ceiling_verdict_follows_the_measured_figures() -> None:
    """The prose under the ceiling table is computed, not written once: fusion without RF below the
    airframe-blind ceiling blames airframe perception; above it, the share of the airframe's worth
    recovered and the gap left are the measured ones."""
    ceiling = {"without_rf": 0.95, "without_rf_or_airframe": 0.90}
    assert "no more than the airframe-blind ceiling" in airframe_verdict(ceiling, 0.89)
    above = airframe_verdict(ceiling, 0.92)
    assert "above the airframe-blind ceiling" in above
    assert "40% of the way from it to the full one" in above
    assert "remaining 3.0 pt" in above
    full = ceiling | {"all": 0.98, "all_but_airframe": 0.96}
    table = "\n".join(ceiling_table(full, {"none": 0.96, "rf": 0.92}))
    assert "| this system's fusion | 96.0% | 92.0% | 4.0 pt |" in table
    assert above in table
