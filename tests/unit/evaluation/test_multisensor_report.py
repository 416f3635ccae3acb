"""The multi-sensor evaluation step on a tiny simulated system: its report and the reference profile
(validation split) it writes for drift monitoring."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rooivalk.data.ingest_multisensor import ensure_source, ingest_events
from rooivalk.data.multisensor_dataset import load_multisensor
from rooivalk.evaluation.multisensor_report import evaluate_fusion_step
from rooivalk.evaluation.profile import check_frame, load_profile
from rooivalk.monitoring.drift import check_drift
from rooivalk.plan import MonitoringSpec, Plan
from rooivalk.steps.system_steps import cache_features, train_fusion_step, train_sensor_step

SENSORS = ["acoustic", "optical", "radar", "rf"]  # the dataset's (sorted) order


@dataclass
class TinySystem:
    plan: Plan
    dataset_dir: str
    model_dirs: list[str]
    features_dir: str
    fusion_dir: str


@pytest.fixture(scope="module")
def tiny_system(tmp_path_factory: pytest.TempPathFactory) -> TinySystem:
    """100 simulated events (the RF sample of every third one and the acoustic sample of every fifth
    one missing), every sensor family at toy size, one epoch each (a few seconds)."""
    root = tmp_path_factory.mktemp("system")
    quick = {"epochs": 1, "batch_size": 16, "lr": 1e-3, "threads": 1}
    plan = Plan.model_validate(
        {
            "name": "tiny-counter-drone",
            "data": {
                "source": str(root / "events"),
                "format": "multisensor",
                "simulate": {"count": 100, "seed": 3, "image_size": 16},
                "split": {"train": 0.6, "val": 0.2, "test": 0.2},
            },
            "sensors": {
                "optical": {"model": {"architecture": "test_efficientnet", "input_size": 32}, "training": quick},
                "rf": {"model": {"family": "rf_cnn_transformer", "architecture": "small"}, "training": quick},
                "radar": {"model": {"family": "radar_sequence", "architecture": "gru"}, "training": quick},
                "acoustic": {"model": {"family": "acoustic_crepe", "architecture": "tiny"}, "training": quick},
            },
            "fusion": {"width": 16, "heads": 2, "depth": 1, "training": {"epochs": 1, "batch_size": 16, "threads": 1}},
            "evaluation": {"gates": [{"metric": "fusion_test_accuracy", "min": 0.0}]},
            "tracking": {"registered_model": "counter-drone"},
        }
    )
    ensure_source(plan)
    index = pd.read_parquet(root / "events" / "events.parquet")
    index.loc[::3, "rf"] = None
    index.loc[1::5, "acoustic"] = None
    index.to_parquet(root / "events" / "events.parquet", index=False)
    dataset_dir = str(root / "dataset")
    ingest_events(plan, dataset_dir)
    model_dirs = []
    for sensor in SENSORS:
        model_dirs.append(str(root / f"model_{sensor}"))
        train_sensor_step(plan, sensor, dataset_dir, model_dirs[-1])
    features_dir, fusion_dir = str(root / "features"), str(root / "fusion")
    cache_features(plan, dataset_dir, model_dirs, features_dir)
    train_fusion_step(plan, dataset_dir, features_dir, fusion_dir)
    return TinySystem(plan, dataset_dir, model_dirs, features_dir, fusion_dir)


def test_evaluation_writes_the_reference_profile_of_the_val_split(tiny_system: TinySystem, tmp_path: Path) -> None:
    s = tiny_system
    report_dir = tmp_path / "report"
    started = time.perf_counter()
    result = evaluate_fusion_step(s.plan, s.dataset_dir, s.model_dirs, s.features_dir, s.fusion_dir, str(report_dir))
    print(f"evaluate_fusion_step: {time.perf_counter() - started:.2f} s")
    reference = str(report_dir / "reference")
    assert result.report["reference_profile"] == reference
    assert json.loads((report_dir / "evaluation.json").read_text())["reference_profile"] == reference
    assert "Reference profile" in (report_dir / "evaluation.md").read_text()

    frame, info = load_profile(reference)
    dataset = load_multisensor(s.dataset_dir)
    val = dataset.split_mask("val")
    assert info.rows == len(frame) == int(val.sum()) > 0
    assert (info.split, info.model, info.dataset_version) == ("val", "counter-drone", dataset.info.version_id)
    stats = [f"{sensor}_{stat}" for sensor in SENSORS for stat in ("mean", "std", "peak", "present")]
    assert [column.name for column in info.columns] == [*stats, "prediction", "confidence"]
    kinds = info.kinds()
    assert {name for name, kind in kinds.items() if kind == "categorical"} == {
        *(f"{sensor}_present" for sensor in SENSORS),
        "prediction",
    }
    features = json.loads((Path(s.features_dir) / "features.json").read_text())["dims"]
    assert {group: len(names) for group, names in info.embeddings.items()} == features
    assert info.embeddings["rf"][0] == "rf_emb_000"
    assert list(frame.columns) == [*kinds, *(name for names in info.embeddings.values() for name in names)]

    # RF is complex I/Q: its statistics cover both parts; present flags follow the dataset's mask.
    rf = dataset.arrays["rf"][val]
    iq = np.stack([rf.real, rf.imag], axis=-1).reshape(len(rf), -1)
    present = dataset.present_of("rf")[val]
    assert frame["rf_std"].to_numpy()[present] == pytest.approx(iq.std(axis=1)[present], rel=1e-5)
    assert list(frame["rf_present"]) == ["1" if p else "0" for p in present]
    assert 0 < present.sum() < len(present)
    assert (frame[["rf_mean", "rf_std", "rf_peak"]].to_numpy()[~present] == 0).all()
    assert set(frame["prediction"]) <= set(dataset.info.classes)
    assert ((frame["confidence"] > 0) & (frame["confidence"] <= 1)).all()
    embedded = np.load(Path(s.features_dir) / "optical.npy")[val]
    assert frame[info.embeddings["optical"]].to_numpy() == pytest.approx(embedded)

    same = check_frame(info, frame, "reference", embeddings=True)
    drift = check_drift(same, same, info, MonitoringSpec(), embeddings=True)
    assert not drift.retrain, drift.reason
    assert drift.drifted_columns() == []
