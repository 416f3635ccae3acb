"""The counter-drone benchmark's fits: fusion retrained per modality-dropout rate, per sensor left out
and on fine-label encoders, and scikit-learn models of what the data allows (a gradient-boosted
classifier on the simulator's true scene variables; linear probes of the airframe in each embedding)."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.harness.trained_system import print_progress
from rooivalk.data.multisensor_dataset import MultiSensorDataset
from rooivalk.evaluation.degraded import summarize_degraded
from rooivalk.evaluation.multisensor_report import degraded_mode
from rooivalk.features.fusion_features import cache_sensor_features
from rooivalk.models.fusion_inference import FusionFeatures, predict_fusion
from rooivalk.plan import FusionSpec, ModalityDropoutSpec, Plan
from rooivalk.training.fusion_training import train_fusion


def fusion_variant(spec: FusionSpec, dropout: ModalityDropoutSpec, seed: int) -> FusionSpec:
    """The plan's fusion settings with another modality dropout and training seed."""
    training = spec.training.model_copy(update={"seed": seed})
    return spec.model_copy(update={"modality_dropout": dropout, "training": training})


def dropout_sweep(
    spec: FusionSpec, dataset: MultiSensorDataset, features: FusionFeatures, rates: list[float], seeds: list[int]
) -> list[dict[str, Any]]:
    """Fusion retrained per (rate, seed) on the same cached features; val and test degraded summaries."""
    rows = []
    for rate in rates:
        dropout = ModalityDropoutSpec(p=rate, max_dropped=spec.modality_dropout.max_dropped if rate else 1)
        for seed in seeds:
            started = time.perf_counter()
            model, _ = train_fusion(features, dataset, fusion_variant(spec, dropout, seed))
            row = {"p": rate, "seed": seed, "seconds": time.perf_counter() - started}
            for split in ("val", "test"):
                row[split] = summarize_degraded(degraded_mode(model, dataset, features, dataset.split_mask(split)))
            val, test = row["val"], row["test"]
            print(f"  p={rate} seed {seed}: val one-missing {val['one_missing_mean']:.4f}, "
                  f"test full {test['full']:.4f} one-missing {test['one_missing_mean']:.4f}", flush=True)  # fmt: skip
            rows.append(row)
    return rows


def specialists(
    spec: FusionSpec, dataset: MultiSensorDataset, features: FusionFeatures, seeds: list[int]
) -> dict[str, dict[str, Any]]:
    """Per sensor, a fusion model trained with that sensor always absent (no modality dropout) and
    scored on the test split without it: what a model built for that one degraded mode reaches on the
    same cached features, against the plan's single model with a mask."""
    sensors = list(features.features)
    assert sensors == list(dataset.sensor_names), f"feature order {sensors} != presence columns {dataset.sensor_names}"
    test = dataset.split_mask("test")
    no_dropout = ModalityDropoutSpec(p=0.0, max_dropped=1)
    results: dict[str, dict[str, Any]] = {}
    for column, sensor in enumerate(sensors):
        present = features.present.copy()
        present[:, column] = False  # hidden in training, validation and test alike
        without = FusionFeatures(features.features, present)
        scores = []
        for seed in seeds:
            model, _ = train_fusion(without, dataset, fusion_variant(spec, no_dropout, seed))
            scores.append(float((predict_fusion(model, without, test) == dataset.labels[test]).mean()))
        results[sensor] = {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "runs": scores}
        print(f"  specialist without {sensor}: test {np.mean(scores):.4f} ({len(scores)} seeds)", flush=True)
    return results


KEYS = ("full", "one_missing_mean", "one_missing_worst", "two_missing_mean", "two_missing_worst")


def sweep_means(rows: list[dict[str, Any]]) -> dict[float, dict[str, dict[str, float]]]:
    """Per modality-dropout rate, the mean over seeds of every degraded-mode figure on val and test,
    and the test figures' standard deviation ("test_std")."""
    means: dict[float, dict[str, dict[str, float]]] = {}
    for rate in sorted({row["p"] for row in rows}):
        chosen = [row for row in rows if row["p"] == rate]
        means[rate] = {
            split: {key: float(np.mean([row[split][key] for row in chosen])) for key in KEYS}
            for split in ("val", "test")
        }
        means[rate]["test_std"] = {key: float(np.std([row["test"][key] for row in chosen])) for key in KEYS}
    return means


# Scene variables only the RF sensor observes; every other variable (airframe, motion, range, speed,
# weather, wind) reaches at least one of optical, radar or acoustic.
RF_ONLY_SCENE_VARIABLES = ("scene_rf_link", "scene_rf_interference")
AIRFRAME_SCENE_VARIABLE = "scene_airframe"  # seen only through optics (silhouette), acoustics and micro-Doppler


def scene_table(dataset: MultiSensorDataset, dataset_dir: str) -> pd.DataFrame:
    """The simulator's ground-truth scene variables (`scene_*` columns of the event index), one row
    per event in the dataset's row order."""
    import io

    from rooivalk import storage
    from rooivalk.data.ingest_multisensor import EVENTS_TABLE, read_event_index

    order = pd.read_csv(io.BytesIO(storage.read_bytes(f"{dataset_dir}/{EVENTS_TABLE}")))["event_id"]
    return read_event_index(dataset.info.source).set_index("event_id").loc[order]


def information_ceiling(dataset: MultiSensorDataset, scenes: pd.DataFrame) -> dict[str, float]:
    """Test accuracy of a gradient-boosted classifier on the simulator's ground-truth scene variables
    (what a perfect sensor suite would know), with all of them and without the RF-only ones: how much
    of fusion's loss without RF the data itself imposes, whatever the models; and both again without
    the airframe, to show how much of the rest hangs on perceiving it."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    columns = [c for c in scenes.columns if c.startswith("scene_") and c != "scene_seed"]
    table = scenes[columns].apply(lambda col: col.astype("category").cat.codes if col.dtype in (object, bool) else col)
    train, test = dataset.split_mask("train"), dataset.split_mask("test")
    scores = {}
    without_rf = [c for c in columns if c not in RF_ONLY_SCENE_VARIABLES]
    variants = {
        "all": columns,
        "without_rf": without_rf,
        # What is left when nothing tells the airframe apart: the kinematics and the weather.
        "all_but_airframe": [c for c in columns if c != AIRFRAME_SCENE_VARIABLE],
        "without_rf_or_airframe": [c for c in without_rf if c != AIRFRAME_SCENE_VARIABLE],
    }
    for name, kept in variants.items():
        model = HistGradientBoostingClassifier(max_iter=300, random_state=0)
        model.fit(table[kept].to_numpy()[train], dataset.labels[train])
        scores[name] = float((model.predict(table[kept].to_numpy()[test]) == dataset.labels[test]).mean())
    return scores


DRONE_CLASSES = ("commercial_drone", "military_drone")


def airframe_probe(dataset: MultiSensorDataset, features: FusionFeatures, scenes: pd.DataFrame) -> dict[str, float]:
    """How much of the airframe each frozen encoder's embedding holds: a logistic-regression probe
    (standardized inputs, C = 0.1) fitted on the training drones' embeddings to their true airframe
    (quadcopter, large quadcopter, fixed wing) and scored on the test drones; also on the optical,
    radar and acoustic embeddings side by side (what fusion has once RF is gone), and the majority
    airframe's share as the floor."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    airframe = scenes[AIRFRAME_SCENE_VARIABLE].to_numpy()
    drone = np.isin(dataset.labels, [dataset.info.classes.index(c) for c in DRONE_CLASSES])
    train, test = drone & dataset.split_mask("train"), drone & dataset.split_mask("test")
    sensors = list(features.features)

    def probe(matrix: np.ndarray, keep: np.ndarray) -> float:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
        model.fit(matrix[train & keep], airframe[train & keep])
        return float((model.predict(matrix[test & keep]) == airframe[test & keep]).mean())

    scores = {name: probe(features.features[name], features.present[:, i]) for i, name in enumerate(sensors)}
    without_rf = [i for i, name in enumerate(sensors) if name != "rf"]
    side_by_side = np.concatenate([features.features[sensors[i]] for i in without_rf], axis=1)
    scores["all but rf"] = probe(side_by_side, features.present[:, without_rf].all(axis=1))
    values, counts = np.unique(airframe[train], return_counts=True)
    scores["majority airframe"] = float((airframe[test] == values[counts.argmax()]).mean())
    return scores


def fine_label_encoders(
    plan: Plan, dataset: MultiSensorDataset, features: FusionFeatures, scenes: pd.DataFrame, sensors: list[str],
    seeds: list[int],
) -> dict[str, Any]:  # fmt: skip
    """Lever test: retrain `sensors` on (class, airframe) pairs instead of the class, so their
    embeddings must tell airframes apart, then retrain fusion on the new embeddings (plan settings,
    every seed) and compare it with fusion on the plan's embeddings, all sensors and each one missing.
    Answers whether encoders trained only on the event class are what hides the airframe from fusion."""
    from rooivalk.training.sensor_training import train_sensor

    airframes = scenes[AIRFRAME_SCENE_VARIABLE]
    pairs = [f"{dataset.info.classes[c]}/{a}" for c, a in zip(dataset.labels, airframes, strict=True)]
    fine_classes = sorted(set(pairs))
    fine = dataclasses.replace(
        dataset,
        labels=np.array([fine_classes.index(p) for p in pairs], dtype=np.int64),
        info=dataset.info.model_copy(update={"classes": fine_classes}),
    )
    assert plan.sensors is not None
    fine_models = {name: train_sensor(name, plan.sensors[name], fine, print_progress) for name in sensors}
    fine_val = {name: result.val_accuracy for name, result in fine_models.items()}
    # Embedded as the pipeline's cache_features step embeds (every split, absent samples left at zero);
    # the entries go to a throwaway cache, since these encoders are not the plan's.
    with tempfile.TemporaryDirectory() as cache_root:
        embedded = cache_sensor_features(dataset, fine_models, cache_root)
    retrained = FusionFeatures({**features.features, **embedded.features}, features.present.copy())
    assert plan.fusion is not None
    test = dataset.split_mask("test")
    scores: dict[str, dict[str, list[float]]] = {}
    for label, chosen in (("plan", features), ("fine", retrained)):
        for seed in seeds:
            model, _ = train_fusion(chosen, dataset, fusion_variant(plan.fusion, plan.fusion.modality_dropout, seed))
            for row in degraded_mode(model, dataset, chosen, test):
                if len(row["removed"]) <= 1:  # none removed, then each sensor alone
                    removed = row["removed"][0] if row["removed"] else "none"
                    scores.setdefault(label, {}).setdefault(removed, []).append(row["accuracy"])
    probes = airframe_probe(dataset, retrained, scenes)
    return {"sensors": sensors, "fine_classes": fine_classes, "fine_val_accuracy": fine_val, "scores": scores,
            "airframe_probe": probes}  # fmt: skip
