"""The counter-drone benchmark's report: its tables, the verdicts computed from the measured figures,
and docs/results/counter_drone/counter_drone.md and .json."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.analysis.counter_drone import sweep_means
from rooivalk import machine
from rooivalk.data.multisensor_dataset import MultiSensorDataset
from rooivalk.evaluation.multisensor_report import render_markdown


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


def sweep_table(rows: list[dict[str, Any]]) -> tuple[list[str], dict[float, dict[str, dict[str, float]]]]:
    means = sweep_means(rows)
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
        f"{metrics['end_to_end_latency_p95_ms']:.1f} ms. Every precision with its reason: "
        "docs/results/export/export.md (benchmarks/export.py).",
    ]
    return lines


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


@dataclass(frozen=True)
class Findings:
    """What benchmarks/counter_drone.py measured on one trained system."""

    results: dict[str, Any]  # evaluate_system: each sensor alone, fusion, degraded mode
    sweep: list[dict[str, Any]]  # fusion retrained per (modality-dropout rate, seed)
    ceiling: dict[str, float]  # information_ceiling
    probes: dict[str, float]  # airframe_probe on the plan's embeddings
    fine: dict[str, Any] | None  # fine_label_encoders, when asked for
    specialists: dict[str, dict[str, Any]]
    export: dict[str, Any] | None  # the pipeline's export report (a --from-run system)
    origin: dict[str, Any]  # where the system came from, seconds per step
    seconds: float


def write_report(
    out: Path, found: Findings, dataset: MultiSensorDataset, *, plan_name: str, plan_rate: float, seeds: list[int],
    command: str, from_run: bool,
) -> None:  # fmt: skip
    """counter_drone.md and counter_drone.json under `out`."""
    results, origin, seconds, fine = found.results, found.origin, found.seconds, found.fine
    sweep_lines, means = sweep_table(found.sweep)
    fusion_scores = results["fusion"]
    best_sensor = max(scores["accuracy"] for scores in results["sensors"].values())
    degraded_by_removed = {",".join(row["removed"]) or "none": row["accuracy"] for row in fusion_scores["degraded"]}
    machine_line = f"{machine.describe()}, {torch.get_num_threads()} torch threads, Python {platform.python_version()}"
    step_seconds = origin["seconds"]
    lines = [
        "# Counter-drone system: sensors alone, fusion, degraded mode, modality dropout",
        "",
        "Reproduce ("
        + ("`make demo`, then " if from_run else "")
        + f"this script: {seconds / 60:.1f} min here; {machine_line}, no GPU):",  # noqa: E501
        "",
        *(["    make demo"] if from_run else []),
        command,
        "",
        f"Plan `{plan_name}`; dataset {dataset.info.version_id}: {dataset.info.num_events} simulated events "
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
        *ceiling_table(found.ceiling, degraded_by_removed),
        "",
        "## What the encoders know of the airframe",
        "",
        *probe_table(found.probes, fine),
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
        *specialist_table(found.specialists, degraded_by_removed),
        "",
        "## What modality dropout buys",
        "",
        *sweep_lines,
        "",
        *dropout_verdict(means, plan_rate),
        "",
        *(
            ["## Export (the pipeline's export_system step)", "", *export_table(found.export), ""]
            if found.export is not None
            else []
        ),  # fmt: skip
        "Seconds per step: " + ", ".join(f"{k} {v:.0f}" for k, v in step_seconds.items()) + ".",
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "counter_drone.md").write_text("\n".join(lines) + "\n")
    record = {"results": results, "sweep": found.sweep, "sweep_means": means, "information_ceiling": found.ceiling,
              "specialists": found.specialists, "airframe_probe": found.probes, "fine_labels": fine,
              "origin": origin, "seconds": seconds,
              "command": command.strip()}  # fmt: skip
    (out / "counter_drone.json").write_text(json.dumps(record, indent=2, default=str))
