"""The counter-drone system: each sensor alone vs fusion, degraded mode, and what modality dropout buys.

Two ways to get the trained system:
- `--from-run runs/counter-drone-demo` reads what `make demo` (the KFP pipeline) produced: its
  dataset, four sensor models, cached features and fusion model (no retraining);
- without it, the plan's whole system is trained in this process (train_multisensor).

Then, on the same cached features, fusion is retrained for every modality-dropout rate of
`--dropout-sweep` and every seed of `--fusion-seeds` (fusion trains in ~15 s on cached features), so
"dropout vs no dropout" is a mean over seeds, not one draw, and the plan's rate can be checked
against the validation split. Writes docs/results/counter_drone.md and .json; prints one JSON object
last, with the ratio of fusion to the best single sensor.

    make demo && .venv/bin/python benchmarks/counter_drone.py --from-run runs/counter-drone-demo
    .venv/bin/python benchmarks/counter_drone.py --set data.simulate.count=600 --out /tmp/cd  # in-process smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from rooivalk import machine
from rooivalk.cli.local_run import resolve_plan
from rooivalk.data.multisensor import MultiSensorDataset, load_multisensor
from rooivalk.evaluation.degraded import summarize_degraded
from rooivalk.evaluation.multisensor_report import degraded_mode, evaluate_system, render_markdown
from rooivalk.models.fusion import FusionTransformer
from rooivalk.plan import FusionSpec, ModalityDropoutSpec, Plan, load_plan
from rooivalk.training.fusion import FusionFeatures, cache_sensor_features, predict_fusion, train_fusion
from rooivalk.training.multisensor import train_multisensor
from rooivalk.training.multisensor_artifacts import load_fusion_features, load_fusion_model
from rooivalk.training.multisensor_steps import load_sensor_models
from rooivalk.training.sensors import SensorTrainResult

ROOT = Path(__file__).resolve().parents[1]
# (dataset, sensor models, cached features, fusion model, where they came from)
System = tuple[MultiSensorDataset, dict[str, SensorTrainResult], FusionFeatures, FusionTransformer, dict[str, Any]]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default=str(ROOT / "pipelines/plans/counter_drone.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="plan override a.b=c")
    parser.add_argument(
        "--from-run", help="a `rooivalk run` folder of this plan (its summary.json names the artifacts)"
    )
    parser.add_argument("--work-dir", default="runs/counter-drone-bench", help="in-process mode: dataset, cache")
    parser.add_argument(
        "--dropout-sweep", default="0,0.2,0.5,0.8", help="modality-dropout rates to retrain fusion with"
    )
    parser.add_argument("--fusion-seeds", default="0,1,2", help="fusion training seeds per rate")
    parser.add_argument(
        "--fine-labels",
        default="",
        help="sensors to retrain on (class, airframe) pairs, to test whether class-only training hides the "
        "airframe from fusion (e.g. acoustic,optical; ~5 min here); empty: skip",
    )
    parser.add_argument("--out", default=str(ROOT / "docs/results"), help="where counter_drone.md/.json go")
    return parser.parse_args(argv)


def _progress(event: dict[str, Any]) -> None:
    if event.get("event") == "epoch_end":
        print(f"  {event.get('model', '')} {event['stage']} {event['epoch']}/{event['epochs']}: "
              f"val {float(event['val_accuracy']):.4f}", flush=True)  # fmt: skip
    elif event.get("event") == "message":
        print(f"- {event['text']}", flush=True)


def from_run(run_dir: Path) -> System:
    summary = json.loads((run_dir / "summary.json").read_text())
    if summary["status"] != "succeeded":
        raise SystemExit(f"{run_dir}/summary.json: the run {summary['status']}: {summary.get('error')}")
    steps = summary["steps"]
    dataset = load_multisensor(steps["ingest_events"]["artifacts"]["dataset"]["uri"])
    model_dirs = [
        record["artifacts"]["model"]["uri"] for name, record in steps.items() if name.startswith("train_sensor_")
    ]
    features, _ = load_fusion_features(steps["cache_features"]["artifacts"]["features"]["uri"])
    fusion, _ = load_fusion_model(steps["train_fusion"]["artifacts"]["model"]["uri"])
    seconds = {name: float(record["seconds"]) for name, record in steps.items()}
    info = {
        "source": str(run_dir),
        "dataset_dir": steps["ingest_events"]["artifacts"]["dataset"]["uri"],
        "export_dir": steps["export_system"]["artifacts"]["exported"]["uri"],
        "seconds": seconds,
        "run_seconds": summary.get("seconds"),
    }
    return dataset, load_sensor_models(model_dirs, dataset), features, fusion, info


def _export_report(origin: dict[str, Any]) -> dict[str, Any]:
    from rooivalk import storage
    from rooivalk.export.shipping import REPORT_FILE

    return json.loads(storage.read_bytes(f"{origin['export_dir']}/{REPORT_FILE}"))


def in_process(plan: Plan, work: Path) -> System:
    run = train_multisensor(plan, str(work), _progress)
    origin = {"source": "in-process", "seconds": run.seconds, "dataset_dir": f"{work}/dataset"}
    return run.dataset, run.sensors, run.features, run.fusion, origin


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


def specialist_table(found: dict[str, dict[str, Any]], degraded: dict[str, float]) -> list[str]:
    lines = [
        "| sensor removed | the plan's fusion, sensor masked | specialist trained without it | specialist - plan |",
        "| --- | ---: | ---: | ---: |",
    ]
    for sensor, scores in found.items():
        plan_score = degraded[sensor]
        lines.append(
            f"| {sensor} | {100 * plan_score:.1f}% | {100 * scores['mean']:.1f} ± {100 * scores['std']:.1f}% "
            f"| {100 * (scores['mean'] - plan_score):+.1f} pt |"
        )
    worst = min(found, key=lambda name: found[name]["mean"])
    lines += [
        "",
        f"A specialist is the same fusion transformer trained on the same cached features with the sensor hidden "
        f"in every event (no modality dropout; {len(found[worst]['runs'])} seeds, mean ± std): it shows what the "
        f"remaining encoders carry for that degraded mode. Where the plan's one masked model is close to the "
        f"specialists, its degraded-mode gap comes from what the remaining sensors' embeddings hold, not from "
        f"serving every mode with one model (worst specialist: without {worst}).",
    ]
    return lines


KEYS = ("full", "one_missing_mean", "one_missing_worst", "two_missing_mean", "two_missing_worst")


def sweep_table(rows: list[dict[str, Any]]) -> tuple[list[str], dict[float, dict[str, dict[str, float]]]]:
    means: dict[float, dict[str, dict[str, float]]] = {}
    for rate in sorted({row["p"] for row in rows}):
        chosen = [row for row in rows if row["p"] == rate]
        means[rate] = {
            split: {key: float(np.mean([row[split][key] for row in chosen])) for key in KEYS}
            for split in ("val", "test")
        }
        means[rate]["test_std"] = {key: float(np.std([row["test"][key] for row in chosen])) for key in KEYS}
    seeds = len(rows) // max(len(means), 1)
    lines = [
        "| modality dropout p | val: one missing | test: full | test: one missing (mean, worst) "
        "| test: two missing (mean, worst) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]

    def pct(value: float) -> str:
        return f"{100 * value:.1f}"

    for rate, m in means.items():
        t, s = m["test"], m["test_std"]
        lines.append(
            f"| {rate:g} | {pct(m['val']['one_missing_mean'])}% | {pct(t['full'])} ± {pct(s['full'])}% "
            f"| {pct(t['one_missing_mean'])} ± {pct(s['one_missing_mean'])}%, {pct(t['one_missing_worst'])}% "
            f"| {pct(t['two_missing_mean'])} ± {pct(s['two_missing_mean'])}%, {pct(t['two_missing_worst'])}% |"
        )
    lines.append(
        f"\nMeans over {seeds} fusion seeds per rate (± their standard deviation), on the same cached features."
    )
    return lines, means


def export_table(report: dict[str, Any]) -> list[str]:
    """The pipeline's export step, per model: the shipped precision, its batch-1 ONNX Runtime latency
    and size next to FP32's, and its accuracy cost on the model's own test samples."""
    lines = [
        "| model | shipped | FP32 ms | shipped ms (p95) | FP32 MB | shipped MB | accuracy drop |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model, choice in report["models"].items():
        fp32, shipped = choice["variants"]["fp32"], choice["variants"][choice["shipped"]]
        lines.append(
            f"| {model} | {choice['shipped']} | {fp32['latency_ms']:.2f} | {shipped['latency_ms']:.2f} "
            f"({shipped['latency_p95_ms']:.2f}) | {fp32['size_mb']:.1f} | {shipped['size_mb']:.1f} "
            f"| {100 * shipped['accuracy_drop']:+.1f} pt |"
        )
    metrics = report["metrics"]
    lines += [
        "",
        f"ONNX system test accuracy: FP32 {100 * metrics['system_fp32_test_accuracy']:.1f}%, shipped variants "
        f"{100 * metrics['system_test_accuracy']:.1f}%; end to end (one event, batch 1) p95 "
        f"{metrics['end_to_end_latency_p95_ms']:.1f} ms. Every precision with its reason: docs/results/export.md "
        "(benchmarks/export.py).",
    ]
    return lines


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
    from rooivalk.training.sensors import train_sensor

    airframes = scenes[AIRFRAME_SCENE_VARIABLE]
    pairs = [f"{dataset.info.classes[c]}/{a}" for c, a in zip(dataset.labels, airframes, strict=True)]
    fine_classes = sorted(set(pairs))
    fine = dataclasses.replace(
        dataset,
        labels=np.array([fine_classes.index(p) for p in pairs], dtype=np.int64),
        info=dataset.info.model_copy(update={"classes": fine_classes}),
    )
    assert plan.sensors is not None
    fine_models = {name: train_sensor(name, plan.sensors[name], fine, _progress) for name in sensors}
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


def probe_table(probes: dict[str, float], fine: dict[str, Any] | None) -> list[str]:
    header = "| embedding | airframe probe, test drones |" + (" after fine-label training |" if fine else "")
    lines = [header, "| --- | ---: |" + (" ---: |" if fine else "")]
    for name, score in probes.items():
        after = ""
        if fine:
            changed = name in fine["sensors"] or name == "all but rf"
            after = f" {100 * fine['airframe_probe'][name]:.1f}% |" if changed else " |"
        lines.append(f"| {name} | {100 * score:.1f}% |{after}")
    return lines


def fine_table(fine: dict[str, Any]) -> list[str]:
    lines = [
        "| sensors removed | fusion on the plan's embeddings | fusion with fine-label encoders |",
        "| --- | ---: | ---: |",
    ]
    for removed, runs in fine["scores"]["plan"].items():
        after = fine["scores"]["fine"][removed]
        lines.append(
            f"| {removed} | {100 * np.mean(runs):.1f} ± {100 * np.std(runs):.1f}% | "
            f"{100 * np.mean(after):.1f} ± {100 * np.std(after):.1f}% |"
        )
    return lines


def ceiling_table(ceiling: dict[str, float], degraded: dict[str, float]) -> list[str]:
    def row(what: str, full: float, without: float) -> str:
        return f"| {what} | {100 * full:.1f}% | {100 * without:.1f}% | {100 * (full - without):.1f} pt |"

    return [
        "| classifier | all sensors | RF removed | cost of losing RF |",
        "| --- | ---: | ---: | ---: |",
        row("ceiling: gradient boosting on the true scene variables", ceiling["all"], ceiling["without_rf"]),
        row("the same without the airframe", ceiling["all_but_airframe"], ceiling["without_rf_or_airframe"]),
        row("this system's fusion", degraded["none"], degraded["rf"]),
        "",
        "The ceiling knows each event's airframe, motion, range, speed and weather exactly; only RF observes "
        "the control link (OFDM/FHSS for commercial, a datalink for military drones) and RF interference. "
        "Commercial and military drones share airframes and speeds, so part of what RF adds cannot come "
        "from the other sensors however good their models are. "
        f"Without RF, knowing the airframe is worth "
        f"{100 * (ceiling['without_rf'] - ceiling['without_rf_or_airframe']):.1f} pt of the ceiling "
        f"({100 * ceiling['without_rf']:.1f}% against {100 * ceiling['without_rf_or_airframe']:.1f}% from the "
        f"kinematics and weather alone); this system without RF reaches {100 * degraded['rf']:.1f}%, "
        + airframe_verdict(ceiling, degraded["rf"]),
    ]


def airframe_verdict(ceiling: dict[str, float], without_rf: float) -> str:
    """Where fusion without RF sits between the airframe-blind ceiling and the full one, in words."""
    blind, seeing = ceiling["without_rf_or_airframe"], ceiling["without_rf"]
    if without_rf <= blind:
        return (
            "no more than the airframe-blind ceiling: its optical, radar and acoustic encoders recover little "
            "of the airframe, and better airframe perception is where the rest of the RF gap lies."
        )
    share = (without_rf - blind) / max(seeing - blind, 1e-9)
    return (
        f"above the airframe-blind ceiling, {100 * min(share, 1.0):.0f}% of the way from it to the full one: "
        "its optical, radar and acoustic encoders use part of the airframe; the remaining "
        f"{100 * max(seeing - without_rf, 0.0):.1f} pt to the ceiling is what they do not resolve of the scene "
        "(airframe, range, motion) at range, in fog and in wind."
    )


def dropout_verdict(means: dict[float, dict[str, dict[str, float]]], rate: float) -> list[str]:
    if 0.0 not in means or rate not in means or rate == 0.0:
        return []
    chosen, none = means[rate], means[0.0]

    def gain(split: str, key: str) -> str:
        return f"{100 * (chosen[split][key] - none[split][key]):+.1f}"

    best = max(means, key=lambda r: means[r]["val"]["one_missing_mean"])
    return [
        f"Modality dropout at the plan's p = {rate:g} against none, test means over seeds: one sensor missing "
        f"{gain('test', 'one_missing_mean')} points (worst case {gain('test', 'one_missing_worst')}), two missing "
        f"{gain('test', 'two_missing_mean')} (worst {gain('test', 'two_missing_worst')}), all sensors present "
        f"{gain('test', 'full')}. The rate with the best validation accuracy with one sensor missing: p = {best:g}."
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = resolve_plan(load_plan(args.plan, args.overrides), Path(args.work_dir).resolve())
    assert plan.fusion is not None, f"{args.plan} is not a multi-sensor plan"
    fine_sensors = [name.strip() for name in args.fine_labels.split(",") if name.strip()]
    unknown = sorted(set(fine_sensors) - set(plan.sensors or {}))
    if unknown:  # checked before anything trains
        raise SystemExit(f"--fine-labels: no sensor named {', '.join(unknown)} in {args.plan} "
                         f"(sensors: {', '.join(plan.sensors or {})})")  # fmt: skip
    started = time.perf_counter()
    if args.from_run:
        dataset, sensors, features, fusion, origin = from_run(Path(args.from_run))
    else:
        dataset, sensors, features, fusion, origin = in_process(plan, Path(args.work_dir).resolve())
    results = evaluate_system(dataset, sensors, features, fusion)
    rates = [float(v) for v in args.dropout_sweep.split(",") if v.strip()]
    seeds = [int(v) for v in args.fusion_seeds.split(",") if v.strip()]
    sweep = dropout_sweep(plan.fusion, dataset, features, rates, seeds)
    sweep_lines, means = sweep_table(sweep)
    scenes = scene_table(dataset, origin["dataset_dir"])
    ceiling = information_ceiling(dataset, scenes)
    probes = airframe_probe(dataset, features, scenes)
    fine = fine_label_encoders(plan, dataset, features, scenes, fine_sensors, seeds) if fine_sensors else None
    specialist_scores = specialists(plan.fusion, dataset, features, seeds)
    seconds = time.perf_counter() - started

    fusion_scores = results["fusion"]
    best_sensor = max(scores["accuracy"] for scores in results["sensors"].values())
    plan_rate = plan.fusion.modality_dropout.p
    command = "    .venv/bin/python benchmarks/counter_drone.py" + (
        f" --from-run {args.from_run}" if args.from_run else ""
    )
    command += "".join(f" --set {shlex.quote(o)}" for o in args.overrides)
    defaults = parse_args([])
    options = ("plan", "work_dir", "dropout_sweep", "fusion_seeds", "fine_labels", "out")  # printed if not default
    for option in options:
        if getattr(args, option) != getattr(defaults, option):
            command += f" --{option.replace('_', '-')} {shlex.quote(str(getattr(args, option)))}"
    degraded_by_removed = {",".join(row["removed"]) or "none": row["accuracy"] for row in fusion_scores["degraded"]}
    machine_line = f"{machine.describe()}, {torch.get_num_threads()} torch threads, Python {platform.python_version()}"
    step_seconds = origin["seconds"]
    lines = [
        "# Counter-drone system: sensors alone, fusion, degraded mode, modality dropout",
        "",
        "Reproduce ("
        + ("`make demo`, then " if args.from_run else "")
        + f"this script: {seconds / 60:.1f} min here; {machine_line}, no GPU):",  # noqa: E501
        "",
        *(["    make demo"] if args.from_run else []),
        command,
        "",
        f"Plan `{Path(args.plan).name}`; dataset {dataset.info.version_id}: {dataset.info.num_events} simulated events "
        f"(train/val/test {dataset.info.split_sizes}); test split scored. Sensor models are scored on the test events "
        f"that have their sample; fusion on all test events. System trained by: {origin['source']}"
        + (f" (pipeline run {origin['run_seconds'] / 60:.1f} min)." if origin.get("run_seconds") else "."),
        "",
        f"## The plan's system (modality dropout p = {plan_rate:g})",
        "",
        *render_markdown(results),
        "",
        f"Fusion beats the best single sensor by {100 * (fusion_scores['accuracy'] - best_sensor):+.1f} points.",
        "",
        "## What the data allows without RF",
        "",
        *ceiling_table(ceiling, degraded_by_removed),
        "",
        "## What the encoders know of the airframe",
        "",
        *probe_table(probes, fine),
        "",
        "A linear probe (logistic regression on standardized embeddings) fitted on the training split's drones "
        "to their true airframe and scored on the test drones: how much of the airframe each frozen encoder's "
        "embedding holds for fusion to use.",
        "",
        *(
            [
                f"Retraining {', '.join(fine['sensors'])} on (class, airframe) pairs ({len(fine['fine_classes'])} "
                "classes) instead of the class, then fusion on the new embeddings (plan settings, "
                f"{len(seeds)} seeds, mean ± std):",
                "",
                *fine_table(fine),
                "",
            ]
            if fine
            else []
        ),
        "## One masked model against specialists",
        "",
        *specialist_table(specialist_scores, degraded_by_removed),
        "",
        "## What modality dropout buys",
        "",
        *sweep_lines,
        "",
        *dropout_verdict(means, plan_rate),
        "",
        *(
            ["## Export (the pipeline's export_system step)", "", *export_table(_export_report(origin)), ""]
            if "export_dir" in origin
            else []
        ),  # fmt: skip
        "Seconds per step: " + ", ".join(f"{k} {v:.0f}" for k, v in step_seconds.items()) + ".",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "counter_drone.md").write_text("\n".join(lines) + "\n")
    record = {"results": results, "sweep": sweep, "sweep_means": means, "information_ceiling": ceiling,
              "specialists": specialist_scores, "airframe_probe": probes, "fine_labels": fine,
              "origin": origin, "seconds": seconds,
              "command": command.strip()}  # fmt: skip
    (out / "counter_drone.json").write_text(json.dumps(record, indent=2, default=str))
    no_dropout, chosen = means.get(0.0), means.get(plan_rate)
    print(
        json.dumps(
            {
                "fusion_accuracy": fusion_scores["accuracy"],
                "best_sensor_accuracy": best_sensor,
                "ratio_fusion_to_best_sensor": fusion_scores["accuracy"] / best_sensor,
                "one_missing_mean": fusion_scores["degraded_summary"]["one_missing_mean"],
                "sweep_test_one_missing_mean_plan_rate": chosen["test"]["one_missing_mean"] if chosen else None,
                "sweep_test_one_missing_mean_no_dropout": no_dropout["test"]["one_missing_mean"]
                if no_dropout
                else None,
                "false_positive_rate": fusion_scores["false_positive_rate"],
                "seconds": seconds,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
