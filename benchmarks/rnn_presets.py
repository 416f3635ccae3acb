"""RNN presets on the edge: size and batch-1 CPU latency of ONNX Runtime FP32 against dynamic INT8.

Each preset of rooivalk.models.rnn.PRESETS at the sign-language shape (30 frames x 63 features, 26
classes), random weights (size and latency do not depend on them): export_rnn_onnx, then the project's
quantize_dynamic_int8, both timed at batch 1 by ONNX Runtime on the CPU (ort_session, measure_latency;
FP32 and INT8 runs alternate so machine load falls on both alike), the peak RSS of a fresh process
running each file, INT8 argmax agreement with FP32 on 256 random sequences, INT8/FP32 ratios (the
baseline, same run) and issue 29's edge targets. Writes rnn_presets.md/.json to `--out` (the .md says
how each figure is taken) and prints the JSON object last.

    .venv/bin/python benchmarks/rnn_presets.py
    .venv/bin/python benchmarks/rnn_presets.py --runs 5 --warmup 1 --presets lightweight --out /tmp/rnn
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import asdict
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
from rooivalk.export.benchmark import measure_latency, ort_session
from rooivalk.export.rnn_onnx import LENGTHS, SEQUENCES, export_rnn_onnx
from rooivalk.export.variants import quantize_dynamic_int8
from rooivalk.models.rnn import PRESETS, build_rnn, parameter_count

ROOT = Path(__file__).resolve().parents[1]
FEATURES, CLASSES, FRAMES, AGREEMENT_ROWS = 63, 26, 30, 256
LATENCY_TARGET_MS = {"lightweight": 50.0, "standard": 100.0, "deep": 200.0}
PARAMETER_TARGET = {"lightweight": 150_000, "standard": 500_000, "deep": 2_000_000}  # the "~"
INT8_SIZE_MB, INT8_LATENCY_MS, INT8_RSS_MB = 10.0, 100.0, 500.0
# The fresh process of the RSS figure: onnxruntime and numpy only, as on the edge device; session
# options as ort_session sets them. Prints VmHWM (peak RSS of this process's memory, kB) after the
# imports and at the end: ru_maxrss would not do, since Linux carries the parent's peak over fork+exec.
RSS_CHILD = """
import sys
import numpy as np, onnxruntime as ort
def peak_kb():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
path, threads, frames, features, seq, lengths = sys.argv[1:]
before, options = peak_kb(), ort.SessionOptions()
options.intra_op_num_threads, options.inter_op_num_threads = int(threads), 1
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
options.add_session_config_entry("session.intra_op.allow_spinning", "0")
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
rows = np.random.default_rng(0).standard_normal((1, int(frames), int(features)), dtype=np.float32)
for _ in range(20):
    session.run(None, {seq: rows, lengths: np.array([int(frames)], np.int64)})
print(before, peak_kb())
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed batch-1 runs per model")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs per model first")
    parser.add_argument("--threads", type=int, default=machine.cpu_count(), help="ORT intra-op and torch threads")
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated subset of the presets")
    parser.add_argument("--out", default=str(ROOT / "docs/results/rnn_presets"), help="where the .md/.json go")
    return parser.parse_args(argv)


def feeds(batch: int, seed: int) -> dict[str, np.ndarray]:
    rows = np.random.default_rng(seed).standard_normal((batch, FRAMES, FEATURES), dtype=np.float32)
    return {SEQUENCES: rows, LENGTHS: np.full(batch, FRAMES, np.int64)}


def interleaved_latency(sessions: dict[str, Any], runs: int, warmup: int) -> dict[str, dict[str, float]]:
    """Batch-1 median/p95 ms of each session; one timed run of each in turn (order flipped every round)."""
    sample = feeds(1, seed=1)
    runners = {name: (lambda s: lambda f: s.run(None, f))(session) for name, session in sessions.items()}
    for run in runners.values():
        measure_latency(run, sample, runs=1, warmup=warmup)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for index in range(runs):
        for name in list(runners)[:: 1 if index % 2 == 0 else -1]:
            times[name].append(measure_latency(runners[name], sample, runs=1, warmup=0).median_ms)
    return {n: {"median_ms": round(float(np.median(t)), 3), "p95_ms": round(float(np.percentile(t, 95)), 3)}
            for n, t in times.items()}  # fmt: skip


def peak_rss(path: Path, threads: int) -> dict[str, float]:
    """Peak RSS (MB = 1e6 bytes) of a fresh process loading and running `path`, and after its imports alone."""
    args = [str(path), str(threads), str(FRAMES), str(FEATURES), SEQUENCES, LENGTHS]
    done = subprocess.run([sys.executable, "-c", RSS_CHILD, *args], capture_output=True, text=True, check=True)
    before, after = (round(int(v) * 1024 / 1e6, 1) for v in done.stdout.split())
    return {"rss_mb": after, "rss_after_import_mb": before}


def measure_preset(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_rnn(name, FEATURES, CLASSES).eval()
    paths = {"fp32": export_rnn_onnx(model, work / f"{name}_fp32.onnx", FEATURES)}
    paths["int8"] = quantize_dynamic_int8(paths["fp32"], work / f"{name}_int8_dynamic.onnx")
    sessions = {p: ort_session(path, args.threads, ["CPUExecutionProvider"]) for p, path in paths.items()}
    latency = interleaved_latency(sessions, args.runs, args.warmup)
    rows = feeds(AGREEMENT_ROWS, seed=2)
    fp32_top, int8_top = (sessions[p].run(None, rows)[0].argmax(1) for p in ("fp32", "int8"))
    fp32, int8 = (
        {"size_mb": round(path.stat().st_size / 1e6, 3), **latency[p], **peak_rss(path, args.threads)}
        for p, path in paths.items()
    )
    target = LATENCY_TARGET_MS[name]
    meets = {
        "fp32_latency": fp32["p95_ms"] < target,
        "int8_latency": int8["p95_ms"] < min(target, INT8_LATENCY_MS),
        "int8_size": int8["size_mb"] < INT8_SIZE_MB,
        "int8_rss": int8["rss_mb"] < INT8_RSS_MB,
    }
    return {
        "settings": asdict(PRESETS[name]),
        "parameters": parameter_count(model),
        "parameter_target": PARAMETER_TARGET[name],
        "latency_target_ms": target,
        "fp32": fp32,
        "int8": int8,
        "latency_ratio": round(int8["median_ms"] / fp32["median_ms"], 3),
        "size_ratio": round(int8["size_mb"] / fp32["size_mb"], 3),
        "argmax_agreement": float((fp32_top == int8_top).mean()),
        "meets": meets,
        "meets_all": all(meets.values()),
    }


def row(label: str, v: dict[str, float], agreement: str) -> str:
    return (
        f"| {label} | {v['size_mb']:.2f} | {v['median_ms']:.2f} | {v['p95_ms']:.2f} | {v['rss_mb']:.0f} | {agreement} |"
    )


def report(record: dict[str, Any]) -> list[str]:
    yes = {True: "yes", False: "**no**"}
    lines = [
        "# RNN presets: size and batch-1 CPU latency, ONNX Runtime FP32 vs dynamic INT8",
        "",
        f"Reproduce ({record['seconds']:.0f} s; {record['date']}; {record['machine']}, {record['threads']} threads, "
        f"load average {record['load_average']} at the start; onnxruntime {record['onnxruntime']}, "
        f"torch {record['torch']}):",
        "",
        f"    {record['command']}",
        "",
        f"Shape of the sign-language data: {FRAMES} frames x {FEATURES} features, {CLASSES} classes. Random weights "
        "(torch seed 0): size and latency do not depend on them, and agreement is measured on random sequences. "
        f"Latency: batch 1, {record['runs']} runs after {record['warmup']} warm-up runs, FP32 and INT8 alternating. "
        "Peak RSS: a fresh process importing onnxruntime only, loading the model and running it 20 times "
        "(VmHWM; MB = 1e6 bytes). Ratios: INT8 / FP32 of the same run. Targets (issue 29): FP32 p95 under the "
        f"preset's latency, INT8 p95 under min(that, {INT8_LATENCY_MS:g} ms), INT8 < {INT8_SIZE_MB:g} MB and "
        f"< {INT8_RSS_MB:g} MB RAM.",
    ]
    for name, preset in record["presets"].items():
        s, fp32, int8, meets = preset["settings"], preset["fp32"], preset["int8"], preset["meets"]
        lines += [
            "",
            f"## {name}: {s['cell'].upper()} {s['hidden']} x {s['layers']}, bidirectional first layer "
            f"{'yes' if s['bidirectional_first'] else 'no'}, dense {s['dense']}; {preset['parameters']:,} parameters "
            f"(issue ~{preset['parameter_target']:,})",
            "",
            "| runtime | size MB | median ms | p95 ms | peak RSS MB | argmax agreement with FP32 |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            row("ORT FP32", fp32, "1"),
            row("ORT INT8 dynamic", int8, f"{preset['argmax_agreement']:.4f}"),
            f"| INT8 / FP32 | {preset['size_ratio']:.2f}x | {preset['latency_ratio']:.2f}x | | | |",
            "",
            f"Targets: FP32 p95 < {preset['latency_target_ms']:g} ms {yes[meets['fp32_latency']]}; INT8 p95 < "
            f"{min(preset['latency_target_ms'], INT8_LATENCY_MS):g} ms {yes[meets['int8_latency']]}; INT8 < "
            f"{INT8_SIZE_MB:g} MB {yes[meets['int8_size']]}; INT8 peak RSS < {INT8_RSS_MB:g} MB "
            f"{yes[meets['int8_rss']]} (after importing onnxruntime alone: {int8['rss_after_import_mb']:.0f} MB).",
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    args = parse_args(given)
    names = [name.strip() for name in args.presets.split(",") if name.strip()]
    unknown = sorted(set(names) - set(PRESETS))
    if unknown:
        raise SystemExit(f"--presets: {unknown} unknown; known: {list(PRESETS)}")
    torch.set_num_threads(args.threads)
    load, started = os.getloadavg()[0], datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="rnn-presets-") as work:
        presets = {}
        for name in names:
            print(f"- {name}", file=sys.stderr, flush=True)
            presets[name] = measure_preset(name, args, Path(work))
    record = {
        "benchmark": "rnn_presets",
        "baseline": "ORT FP32 of the same model, batch 1, same run",
        "presets": presets,
        "latency_ratios": {name: p["latency_ratio"] for name, p in presets.items()},
        "size_ratios": {name: p["size_ratio"] for name, p in presets.items()},
        "all_targets_met": all(p["meets_all"] for p in presets.values()),
        "weights": "random (torch seed 0)",
        "runs": args.runs,
        "warmup": args.warmup,
        "threads": args.threads,
        "command": shlex.join([".venv/bin/python", "benchmarks/rnn_presets.py", *given]),
        "machine": machine.describe(),
        "load_average": round(load, 2),
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
    }
    write_result(args.out, "rnn_presets", report(record), record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
