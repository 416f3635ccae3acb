"""Pruning the fashion plan's CNN: 50% magnitude and 50% channels, each fine-tuned, against the unpruned model.

The baseline is pipelines/plans/fashion_finetune.yaml (ImageNet EfficientNet-Lite0 fine-tuned on
Fashion-MNIST at 48 px, schedule auto) shrunk to run here: no budget, auto's full stage for --epochs
epochs, every epoch capped at --max-train-batches batches of 64. Each pruned model resumes a copy of the
baseline's checkpoints with `training.pruning` added, so its stages are the baseline's (restored, not
retrained) and only the pruning phase trains: --prune-epochs epochs at --prune-lr under the same cap.
Every model then goes through the library's export step (rooivalk.export.export_model, FP32 only):
ONNX checked against PyTorch, accuracy on the 10,000 official test images. The three FP32 ONNX files
are then timed by ONNX Runtime on the CPU at batch 1, one run of each in turn (order flipped every
round, so machine load falls on all alike): median and p95 of --runs runs each. Sizes: the ONNX file,
and the file zipped (deflate), since unstructured zeros take as much room in an ONNX file as any float
but compress. Ratios are to the baseline of the same run. Writes pruning.md and pruning.json to --out
and prints the JSON object last.

    .venv/bin/python benchmarks/pruning.py
    .venv/bin/python benchmarks/pruning.py --epochs 1 --max-train-batches 10 --prune-epochs 1 --runs 50 \
        --out /tmp/pruning    # smoke run
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a file: helpers import from benchmarks
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness.results import write_result  # noqa: E402
from rooivalk import machine
from rooivalk.data.dataset import load_dataset
from rooivalk.data.ingest import ingest_data
from rooivalk.data.transforms import to_model_input
from rooivalk.export import export_model
from rooivalk.export.benchmark import measure_latency, ort_runner, ort_session
from rooivalk.models.artifact import load_trained_model, read_model_info
from rooivalk.plan import Plan, load_plan
from rooivalk.training import train_model

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "pipelines/plans/fashion_finetune.yaml"
BASELINE = "baseline"
METHODS = ("magnitude", "channels")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist", help="the plan's data.source")
    parser.add_argument("--amount", type=float, default=0.5, help="share of weights / channels pruned")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the baseline's full stage")
    parser.add_argument("--max-train-batches", type=int, default=150, help="cap per epoch, every stage and phase")
    parser.add_argument("--prune-epochs", type=int, default=2, help="fine-tuning epochs after pruning")
    parser.add_argument("--prune-lr", type=float, default=5e-4, help="LR of every group while fine-tuning")
    parser.add_argument("--runs", type=int, default=300, help="timed batch-1 runs per model")
    parser.add_argument("--warmup", type=int, default=30, help="untimed runs per model first")
    parser.add_argument("--threads", type=int, default=machine.cpu_count(), help="ORT intra-op and torch threads")
    parser.add_argument("--work-dir", default="runs/pruning-bench", help="dataset, checkpoints, models, exports")
    parser.add_argument("--out", default=str(ROOT / "docs/results/compression"), help="where pruning.md/.json go")
    return parser.parse_args(argv)


def log(text: str) -> None:
    print(f"[pruning] {text}", file=sys.stderr, flush=True)


def make_plan(args: argparse.Namespace, work: Path, name: str) -> Plan:
    overrides = [
        f"data.source={args.source}",
        "training.budget_seconds=null",
        f"training.epochs={args.epochs}",
        f"training.max_train_batches={args.max_train_batches}",
        f"training.threads={args.threads}",
        f"training.checkpoint.uri={work / name / 'checkpoints'}",
        "evaluation.gates=[]",
        "export.precisions=[fp32]",
        "export.gates=[]",
        "export.models={}",
        "export.end_to_end_budget_ms=null",
    ]
    if name in METHODS:
        overrides += [
            f"training.pruning.method={name}",
            f"training.pruning.amount={args.amount}",
            f"training.pruning.epochs={args.prune_epochs}",
            f"training.pruning.lr={args.prune_lr}",
        ]
    return load_plan(PLAN, overrides)


def zipped_size(data: bytes) -> int:
    """Bytes of `data` deflated at zip's default level (what a zipped bundle of the file weighs)."""
    return len(zlib.compress(data, 6))


def train_and_export(args: argparse.Namespace, work: Path, name: str, dataset_dir: str) -> dict[str, Any]:
    """Train (a pruned model: resume the baseline's finished stages, then run the phase), then export."""
    plan = make_plan(args, work, name)
    if name in METHODS:
        shutil.copytree(work / BASELINE / "checkpoints", work / name / "checkpoints")
    started = time.perf_counter()
    trained = train_model(plan, dataset_dir, str(work / name / "model"))
    seconds = time.perf_counter() - started
    pruned = {k.removeprefix("prune_"): v for k, v in trained.metrics.items() if k.startswith("prune_")}
    log(f"{name}: trained in {seconds:.0f} s, stages {[s['stage'] for s in trained.stages]}, {pruned}")
    exported = export_model(plan, str(work / name / "model"), dataset_dir, str(work / name / "export"), log)
    onnx = work / name / "export" / "variants" / "model" / "model_fp32.onnx"
    data = onnx.read_bytes()
    return {
        "onnx": str(onnx),
        "seconds": round(seconds, 1),  # resumed stages cost nothing: a pruned model's is its phase
        "stages": [s["stage"] for s in trained.stages],
        "val_accuracy": trained.metrics["best_val_accuracy"],
        "test_accuracy": exported.metrics["system_fp32_test_accuracy"],
        "onnx_max_abs_diff": exported.metrics["onnx_max_abs_diff"],
        "onnx_top1_agreement": exported.metrics["onnx_top1_agreement"],
        "parameters": sum(p.numel() for p in load_trained_model(str(work / name / "model"))[0].parameters()),
        "size_mb": len(data) / 1e6,
        "zipped_mb": zipped_size(data) / 1e6,
        "pruning": pruned,
    }


def interleaved_latency(paths: dict[str, str], sample: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """Batch-1 median/p95 ms of each ONNX file; one timed run of each in turn (order flipped every round)."""
    runners = {name: ort_runner(ort_session(path, threads=args.threads)) for name, path in paths.items()}
    for run in runners.values():
        measure_latency(run, sample, runs=1, warmup=args.warmup)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for index in range(args.runs):
        for name in list(runners)[:: 1 if index % 2 == 0 else -1]:
            times[name].append(measure_latency(runners[name], sample, runs=1, warmup=0).median_ms)
    return {n: {"median_ms": float(np.median(t)), "p95_ms": float(np.percentile(t, 95))} for n, t in times.items()}


def report(record: dict[str, Any]) -> list[str]:
    models, ratios = record["models"], record["ratio_to_baseline"]
    s = record["settings"]
    lines = [
        "# Pruning: 50% magnitude and 50% channels on the fashion plan's EfficientNet-Lite0",
        "",
        f"Measured {record['date']} on {record['machine']} (load average {record['load_average']} at the start; "
        f"onnxruntime {record['onnxruntime']}, torch {record['torch']}, {s['threads']} threads), in "
        f"{record['seconds']:.0f} s:",
        "",
        f"    {record['command']}",
        "",
        f"Baseline: pipelines/plans/fashion_finetune.yaml shrunk to run here (no budget; schedule auto with its "
        f"full stage for {s['epochs']} epochs, every epoch at most {s['max_train_batches']} batches of 64). Each "
        f"pruned model resumes a copy of the baseline's checkpoints with `training.pruning` (amount {s['amount']:g}, "
        f"{s['prune_epochs']} epochs at lr {s['prune_lr']:g}, the same cap), so only its pruning phase trains. "
        "Accuracy: the export step's FP32 ONNX model on the 10,000 official test images. Latency: ONNX Runtime "
        f"CPU, batch 1, {s['runs']} runs of each model after {s['warmup']} warm-up runs, one run of each in turn. "
        "Zipped: the ONNX file deflated (zlib level 6).",
        "",
        "| model | parameters | test accuracy | median ms | p95 ms | ONNX MB | zipped MB | ONNX vs PyTorch max diff |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, m in models.items():
        lines.append(
            f"| {name} | {m['parameters']:,} | {m['test_accuracy']:.4f} | {m['median_ms']:.2f} | {m['p95_ms']:.2f} | "
            f"{m['size_mb']:.2f} | {m['zipped_mb']:.2f} | {m['onnx_max_abs_diff']:.1e} |"
        )
    lines += [
        "",
        "| against the baseline | median latency | p95 latency | ONNX size | zipped size | test accuracy |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in ratios.items():
        lines.append(
            f"| {name} | {r['latency_median']:.2f}x | {r['latency_p95']:.2f}x | {r['size']:.2f}x | "
            f"{r['zipped_size']:.2f}x | {r['accuracy_delta'] * 100:+.2f} points |"
        )
    magnitude, channels = models["magnitude"]["pruning"], models["channels"]["pruning"]
    speed = ratios["magnitude"]["latency_median"]
    verdict = (
        "unstructured sparsity buys no CPU speed: ONNX Runtime's CPU kernels multiply the zeros like any weight"
        if speed > 0.9
        else "faster than the baseline, which ONNX Runtime's dense CPU kernels do not explain: rerun to rule out noise"
    )
    lines += [
        "",
        f"- magnitude: sparsity {magnitude.get('sparsity', float('nan')):.3f} over "
        f"{magnitude.get('layers', 0):.0f} conv/linear layers. The zeros are stored as floats, so the ONNX file "
        f"is as large as the baseline's, and only the zipped file shrinks. Latency {speed:.2f}x the baseline's: "
        f"{verdict}.",
        f"- channels: {channels.get('groups', 0):.0f} channel groups removed, {channels.get('skipped_groups', 0):.0f} "
        f"left whole; parameters {channels.get('parameter_ratio', float('nan')):.2f}x the baseline's.",
        f"- The pruned models trained {s['prune_epochs']} epochs more than the baseline (their phase), which is "
        "how a pruned model can score above it.",
        f"- Wall clock: baseline training {models[BASELINE]['seconds']:.0f} s, magnitude's phase "
        f"{models['magnitude']['seconds']:.0f} s, channels' {models['channels']['seconds']:.0f} s, on cores shared "
        "with other jobs (the load average above): these seconds do not compare with each other.",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    args = parse_args(given)
    torch.set_num_threads(args.threads)
    load, started = os.getloadavg()[0], datetime.now(UTC)
    work = Path(args.work_dir)
    dataset_dir = work / "dataset"
    if not dataset_dir.exists():  # ingested once per work dir
        ingest_data(make_plan(args, work, BASELINE).data, str(dataset_dir))
    models: dict[str, dict[str, Any]] = {}
    for name in (BASELINE, *METHODS):
        shutil.rmtree(work / name, ignore_errors=True)
        models[name] = train_and_export(args, work, name, str(dataset_dir))
    info = read_model_info(str(work / BASELINE / "model"))
    images, _ = load_dataset(str(dataset_dir)).subset("test")
    sample = to_model_input(images[:1], info.input_size, info.mean, info.std, info.in_chans).numpy()
    latency = interleaved_latency({name: m.pop("onnx") for name, m in models.items()}, sample, args)
    for name, stats in latency.items():
        models[name] |= stats
    base = models[BASELINE]
    record = {
        "benchmark": "pruning",
        "baseline": "the unpruned model of the same run (same stages), FP32 ONNX Runtime at batch 1",
        "models": models,
        "ratio_to_baseline": {
            name: {
                "latency_median": models[name]["median_ms"] / base["median_ms"],
                "latency_p95": models[name]["p95_ms"] / base["p95_ms"],
                "size": models[name]["size_mb"] / base["size_mb"],
                "zipped_size": models[name]["zipped_mb"] / base["zipped_mb"],
                "parameters": models[name]["parameters"] / base["parameters"],
                "accuracy_delta": models[name]["test_accuracy"] - base["test_accuracy"],
            }
            for name in METHODS
        },
        "settings": {k: v for k, v in vars(args).items() if k not in ("work_dir", "out", "source")},
        "command": shlex.join([".venv/bin/python", "benchmarks/pruning.py", *given]),
        "machine": machine.describe(),
        "load_average": round(load, 2),
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
    }
    write_result(args.out, "pruning", report(record), record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
