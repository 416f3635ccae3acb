"""A variant ensemble of the sign-language plan: seed variants alone and their probability average.

pipelines/plans/sign_language.yaml at reduced scale (fewer simulated sequences, a smaller GRU, fewer
epochs: what 2 shared cores afford) with `variants.members` = one member per seed (the plan's own seed,
then `training.seed: s`), through the library as `rooivalk run` calls it: ingest_data -> train_model
(members into members/<k>) -> evaluate_model (each member and the ensemble on the test split) ->
export_model (one ONNX graph of the averaged probabilities, verified, INT8 dynamic variant, bundle).
Then batch-1 latency in ONNX Runtime of the ensemble's FP32 graph against one member's FP32 graph
(member 0, exported alone), interleaved in rounds so that load on the cores hits both alike. Writes
variant_ensemble.md and .json to --out; the JSON printed last has ratio = the ensemble's test accuracy
over the best member's (the baseline), both measured in this run on the same test rows.

    .venv/bin/python benchmarks/variant_ensemble.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rooivalk import machine
from rooivalk.data import ingest_data
from rooivalk.data.datasets import load_array_dataset
from rooivalk.evaluation.array_evaluation import evaluate_array_model
from rooivalk.export import export_model
from rooivalk.export.array_export import onnx_feeds
from rooivalk.export.benchmark import measure_latency, ort_session
from rooivalk.export.rnn_onnx import export_rnn_onnx
from rooivalk.models.array_artifact import load_array_model, load_variant_members
from rooivalk.models.array_inference import model_arrays
from rooivalk.plan import load_plan
from rooivalk.training import train_model

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "pipelines" / "plans" / "sign_language.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="one member per seed (the first is the plan's own)")
    parser.add_argument("--count", type=int, default=1040, help="simulated sequences (the plan: 2600)")
    parser.add_argument("--classes", type=int, default=26, help="signs (the plan: 26)")
    parser.add_argument("--architecture", default="gru-32x1", help="model.architecture (the plan: standard)")
    parser.add_argument("--epochs", default="12,4", help="epochs of the plan's two stages (the plan: 40,10)")
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    parser.add_argument("--latency-runs", type=int, default=300, help="timed batch-1 runs per graph and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    parser.add_argument("--out", default=str(ROOT / "docs/results/compression"))
    return parser.parse_args(argv)


def plan_overrides(args: argparse.Namespace, work: Path) -> list[str]:
    seeds = [int(s) for s in args.seeds.split(",")]
    members = ", ".join("{}" if k == 0 else f"{{training.seed: {seed}}}" for k, seed in enumerate(seeds))
    main, gentle = args.epochs.split(",")
    return [
        f"data.source={work / 'signs.parquet'}",
        f"data.simulate.count={args.count}",
        f"data.simulate.num_classes={args.classes}",
        f"model.architecture={args.architecture}",
        f"training.seed={seeds[0]}",
        f"training.threads={args.threads}",
        f"training.stages.0.epochs={main}",
        f"training.stages.1.epochs={gentle}",
        "evaluation.gates=[]",
        "export.fail_on_gate=false",
        f"variants.members=[{members}]",
    ]


def latencies(graphs: dict[str, Path], sample: dict[str, np.ndarray], args: argparse.Namespace) -> dict[str, Any]:
    """Median batch-1 latency (ms) of each graph: the median over rounds of each round's median."""
    sessions = {name: ort_session(path, threads=args.threads) for name, path in graphs.items()}
    rounds: dict[str, list[float]] = {name: [] for name in graphs}
    for _ in range(args.rounds):
        for name, session in sessions.items():
            stats = measure_latency(lambda feeds, s=session: s.run(None, feeds), sample, args.latency_runs, 20)
            rounds[name].append(stats.median_ms)
    return {name: {"median_ms": float(np.median(values)), "rounds_ms": values} for name, values in rounds.items()}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    plan = load_plan(PLAN, plan_overrides(args, work))
    dataset_dir, model_dir = str(work / "dataset"), str(work / "model")
    ingest_data(plan.data, dataset_dir)
    started = time.perf_counter()
    trained = train_model(plan, dataset_dir, model_dir)
    train_seconds = time.perf_counter() - started
    evaluation = evaluate_array_model(plan, model_dir, dataset_dir, str(work / "evaluation"))
    exported = export_model(plan, model_dir, dataset_dir, str(work / "export"))
    ensemble_graph = work / "export" / "variants" / "model" / "model_fp32.onnx"
    _, info = load_array_model(model_dir)
    member, member_info = load_variant_members(model_dir, info)[0]
    member_graph = export_rnn_onnx(member, work / "member_0.onnx", len(member_info.input_names))
    arrays, _ = model_arrays(info, load_array_dataset(dataset_dir), "test")
    feeds = onnx_feeds(info, arrays)
    sample = {name: array[:1] for name, array in feeds.items()}
    timed = latencies({"ensemble": ensemble_graph, "member_0": member_graph}, sample, args)
    report = evaluation.report["ensemble"]
    scores = {
        name: {"test_accuracy": row["accuracy"], "test_log_loss": row["log_loss"], "test_macro_f1": row["macro_f1"]}
        for name, row in report["scores"].items()
    }
    members = [name for name in scores if name != "ensemble"]
    best = max(members, key=lambda name: scores[name]["test_accuracy"])
    best_loss = min(members, key=lambda name: scores[name]["test_log_loss"])
    mean = {key: float(np.mean([scores[name][key] for name in members])) for key in scores[members[0]]}
    return {
        "dataset_version": info.dataset_version,
        "split_sizes": load_array_dataset(dataset_dir).info.split_sizes,
        "scores": scores,
        "members_mean": mean,
        "best_member": best,
        "ratio": scores["ensemble"]["test_accuracy"] / scores[best]["test_accuracy"],
        "log_loss_ratio": scores["ensemble"]["test_log_loss"] / scores[best_loss]["test_log_loss"],
        "best_member_by_log_loss": best_loss,
        "latency": timed,
        "latency_ratio": timed["ensemble"]["median_ms"] / timed["member_0"]["median_ms"],
        "train_seconds": train_seconds,
        "train_metrics": {k: v for k, v in trained.metrics.items() if k.startswith(("ensemble_", "member_"))},
        "export_metrics": exported.metrics,
        "shipped": exported.choices[0].chosen,
        "length": info.length,
        "evaluation_ensemble": report,
    }


def markdown(result: dict[str, Any], args: argparse.Namespace, command: str, described: str, seconds: float) -> str:
    sizes = result["split_sizes"]
    seeds = args.seeds.split(",")
    rows = [
        f"| {'member ' + name + ' (seed ' + seeds[int(name)] + ')' if name != 'ensemble' else '**ensemble**'} "
        f"| {100 * s['test_accuracy']:.2f}% | {s['test_log_loss']:.4f} | {s['test_macro_f1']:.4f} |"
        for name, s in result["scores"].items()
    ]
    timed, export, mean = result["latency"], result["export_metrics"], result["members_mean"]
    return "\n".join(
        [
            "# Variant ensemble: seed variants of the sign-language plan",
            "",
            f"Reproduce ({seconds / 60:.1f} min, {described}, {datetime.date.today().isoformat()}):",
            "",
            f"    {command}",
            "",
            f"pipelines/plans/sign_language.yaml at reduced scale: {args.count} simulated sequences of "
            f"{args.classes} signs (train {sizes['train']}, val {sizes['val']}, test {sizes['test']}), model "
            f"`{args.architecture}`, stages of {args.epochs.replace(',', ' and ')} epochs, early stopping as the "
            f"plan. `variants.members`: one member per seed ({', '.join(seeds)}), equal weights. Each member "
            "trains through the usual path; evaluation scores each alone and the average of their "
            "probabilities on the same test rows (one test error is "
            f"{100 / sizes['test']:.2f} points). One run: seeds vary the members, not the split.",
            "",
            "| model | test accuracy | test log loss | test macro F1 |",
            "| --- | ---: | ---: | ---: |",
            *rows,
            f"| mean of the members | {100 * mean['test_accuracy']:.2f}% | {mean['test_log_loss']:.4f} "
            f"| {mean['test_macro_f1']:.4f} |",
            "",
            f"Ensemble / best member (member {result['best_member']}) test accuracy: **{result['ratio']:.4f}**; "
            f"ensemble / best member's (member {result['best_member_by_log_loss']}) test log loss: "
            f"**{result['log_loss_ratio']:.4f}** (lower is better). Averaging probabilities puts the ensemble's log "
            "loss at or below the members' mean (the log is concave), not below the best member's.",
            "",
            "## Batch-1 latency (ONNX Runtime FP32, CPU)",
            "",
            "| graph | median latency (ms) | per round (ms) |",
            "| --- | ---: | --- |",
            *[
                f"| {name} | {t['median_ms']:.3f} | {', '.join(f'{v:.3f}' for v in t['rounds_ms'])} |"
                for name, t in timed.items()
            ],
            "",
            f"Ensemble / one member: **{result['latency_ratio']:.2f}x** ({args.rounds} interleaved rounds of "
            f"{args.latency_runs} runs each, {args.threads} thread(s); the sample is one test sequence of "
            f"{result['length']} frames). The export step (its own timing, {export['model_latency_ms']:.3f} ms for the "
            f"shipped `{result['shipped']}` graph) put PyTorch eager FP32 of every member at "
            f"{export['latency_torch_fp32_ms']:.3f} ms.",
            "",
            f"Training all members: {result['train_seconds']:.0f} s.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]  # other work on the cores skews the seconds (not the accuracies: seeded)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="variant-ensemble-") as work:
        result = run(args, Path(work))
    seconds = time.perf_counter() - started
    described = f"{machine.describe()}, torch/ORT threads {args.threads}, load average {load:.1f} at start"
    command = shlex.join([".venv/bin/python", "benchmarks/variant_ensemble.py", *argv])
    text = markdown(result, args, command, described, seconds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "variant_ensemble.md").write_text(text)
    record = {"command": command, "machine": described, "seconds": seconds, "settings": vars(args), **result}
    (out / "variant_ensemble.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(text)
    print(
        json.dumps(
            {
                "benchmark": "variant_ensemble",
                "baseline": f"best single member (member {result['best_member']}) on the same test split, same run",
                "seeds": [int(s) for s in args.seeds.split(",")],
                "ratio": round(result["ratio"], 4),
                "log_loss_ratio": round(result["log_loss_ratio"], 4),
                "test_accuracy": {name: s["test_accuracy"] for name, s in result["scores"].items()},
                "test_log_loss": {name: s["test_log_loss"] for name, s in result["scores"].items()},
                "latency_ms": {name: t["median_ms"] for name, t in result["latency"].items()},
                "latency_ratio": round(result["latency_ratio"], 3),
                "machine": described,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
