"""The RNN presets on a real public sequence set: JapaneseVowels (UEA/UCI) against 1NN-DTW_D.

JapaneseVowels ships inside sktime (sktime/datasets/data/JapaneseVowels/*.ts; nothing is downloaded):
640 utterances of 9 speakers, 12 LPC cepstrum coefficients per frame, 7 to 29 frames, the archive's
official split of 270 train and 370 test sequences. The script writes them as the sequences reader's
long-form table (sequence_id, label, split, 12 feature columns c0..c11; rows in frame order, no step
column), the split column giving the official train and test split only. `ingest_sequences` keeps the
official test split and draws val from the train sequences, stratified, in the ratio split.train :
split.val (`array_dataset.split_codes`): SplitSpec(train=1 - f, val=f, test=0, seed=seed) with f
(--val-fraction, 0.2) gives each seed its own val draw of 20% of the official train split. Ingestion
stores the longest length, 29 frames (edge padding; train-only standardization); each preset of
`rooivalk.models.rnn` trains through `fit_model` with lengths fed to the model, and every model is
scored on the official 370 test sequences. The same run scores one-nearest-neighbour DTW (dependent and
independent, full window, raw features, each sequence at its own length) on the official split: the
baseline, 1NN-DTW_D, measured here (the accuracy recalled from Bagnall et al. 2018 is shown beside it,
unverified).

--plan also runs the sign-language example plan (pipelines/plans/sign_language.yaml) end to end through
`rooivalk run` on the same CSV, changing data.source only (--plan-set adds overrides, each recorded),
and reports its summary.json. If the unchanged plan fails an evaluation gate, that is reported and the
plan is run again with evaluation.fail_on_gate=false for the figures.

Writes public_sequences.md/.json/.png to --out; the JSON printed last has ratio_to_baseline = the best
preset's mean test accuracy over the 1NN-DTW_D accuracy measured in the run.

    .venv/bin/pip install sktime==1.2.0   # once: the dataset's package (benchmark-only)
    .venv/bin/python benchmarks/public_sequences.py --plan
    .venv/bin/python benchmarks/public_sequences.py --presets lightweight --seeds 0 --epochs 3 --out /tmp/seq
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from rooivalk import machine
from rooivalk.data.sequence_dataset import ingest_sequences, load_sequence_dataset
from rooivalk.models.rnn import PRESETS, build_rnn, parameter_count
from rooivalk.plan import SplitSpec, TrainingSpec
from rooivalk.training.engine.fitting import fit_model
from rooivalk.training.tasks import Inputs, TensorClassification

ROOT = Path(__file__).resolve().parents[1]
DATASET = "JapaneseVowels"
PLAN = "pipelines/plans/sign_language.yaml"
BASELINE = "1NN-DTW_D"  # measured in the run on the official split; the ratio's denominator
# Bagnall et al. 2018, the UEA archive's benchmark table, JapaneseVowels row, as recalled: the table could
# not be opened from this machine (no internet), so these figures are a citation, not verified here.
PUBLISHED: dict[str, Any] = {
    "classifier": "1NN-DTW_D",
    "accuracy": 0.949,
    "others": {"1NN-ED": 0.924, "1NN-DTW_I": 0.959},
    "verified": False,
    "source": "A. Bagnall, H. A. Dau, J. Lines, M. Flynn, J. Large, A. Bostrom, P. Southam, E. Keogh, 'The UEA "
    "multivariate time series classification archive, 2018', arXiv:1811.00075, benchmark results table, "
    "JapaneseVowels: 1NN-ED 0.924, 1NN-DTW_I 0.959, 1NN-DTW_D 0.949 (test accuracy on the official split), "
    "recalled from the paper's table, not verified here",
}


class SequenceClassification(TensorClassification):
    """TensorClassification whose model takes (sequences (B, T, F), lengths (B,)): the RNN's forward."""

    name: ClassVar[str] = "sequence_benchmark"

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> Inputs:
        return {"sequences": batch["sequences"], "lengths": batch["lengths"]}

    def forward(self, model: nn.Module, inputs: Inputs) -> torch.Tensor:
        assert isinstance(inputs, dict)
        return model(inputs["sequences"], inputs["lengths"])  # type: ignore[no-any-return]

    def can_cache_features(self, model: nn.Module) -> bool:
        return False


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS), help=f"comma-separated: {', '.join(PRESETS)}")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated; each draws the val split and the init")
    parser.add_argument("--deep-seeds", default=None, help="seeds of the deep preset (default: --seeds)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=10, help="early stopping on val accuracy (epochs)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of the official train split")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: safe on shared cores)")
    parser.add_argument(
        "--skip-dtw", action="store_true", help="leave out the in-run 1NN-DTW (the ratio then uses the recalled figure)"
    )
    parser.add_argument("--plan", action="store_true", help=f"also run {PLAN} on the data through `rooivalk run`")
    parser.add_argument("--plan-set", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra --set for the plan run (repeatable; each is recorded)")  # fmt: skip
    parser.add_argument(
        "--plan-out", default=None, help="folder of the plan run (default runs/public-sequences-<time>)"
    )
    parser.add_argument("--out", default=str(ROOT / "docs/results/public_sequences"))
    return parser.parse_args(argv)


def load_japanese_vowels() -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """The official splits: split -> (sequences float64 (T_i, 12), labels str (N,)), sktime's bundled copy."""
    try:
        from sktime.datasets import load_japanese_vowels as load  # imported here: a benchmark-only dependency
    except ImportError as error:
        raise SystemExit(
            "this benchmark reads the dataset bundled with sktime: .venv/bin/pip install sktime==1.2.0"
        ) from error
    out = {}
    for split in ("train", "test"):
        x, y = load(split=split, return_type="nested_univ")  # one pd.Series per (case, dimension)
        sequences = [np.stack([np.asarray(x.iloc[i, d], dtype=np.float64) for d in range(x.shape[1])], axis=1)
                     for i in range(len(x))]  # fmt: skip
        out[split] = (sequences, np.asarray(y).astype(str))
    return out


def write_table(data: dict[str, tuple[list[np.ndarray], np.ndarray]], path: Path) -> None:
    """The long-form table the sequences reader and the sign-language plan read: sequence_id, label, split
    (the official train or test), c0..c11, one row per frame in frame order (no step column)."""
    frames = []
    for split, (sequences, labels) in data.items():
        for i, (sequence, label) in enumerate(zip(sequences, labels, strict=True)):
            frame = pd.DataFrame(sequence, columns=[f"c{d}" for d in range(sequence.shape[1])])
            frame.insert(0, "split", split)
            frame.insert(0, "label", f"speaker{label}")
            frame.insert(0, "sequence_id", f"{split}-{i:03d}")
            frames.append(frame)
    pd.concat(frames, ignore_index=True).to_csv(path, index=False)


def dtw_distances(queries: list[np.ndarray], references: list[np.ndarray], chunk: int = 40) -> np.ndarray:
    """Full-window DTW (squared Euclidean frame cost, summed over the features given) of every query
    against every reference: (Q, R). Vectorised over pairs; padding past a sequence's length never
    reaches the cell read out, since a DTW cell depends on earlier cells only."""
    steps = max(len(s) for s in [*queries, *references])

    def pad(sequences: list[np.ndarray]) -> np.ndarray:
        return np.stack([np.pad(s, ((0, steps - len(s)), (0, 0)), mode="edge") for s in sequences])

    ref, ref_last = pad(references), np.array([len(s) - 1 for s in references])
    out = np.empty((len(queries), len(references)))
    for start in range(0, len(queries), chunk):
        block = queries[start : start + chunk]
        q = pad(block)
        cross = np.einsum("bif,rjf->brij", q, ref)
        squares = (q**2).sum(-1)[:, None, :, None] + (ref**2).sum(-1)[None, :, None, :]
        cost = np.maximum(squares - 2 * cross, 0.0)  # (b, R, T, T): squared Euclidean frame distances
        acc = np.full((*cost.shape[:2], steps + 1, steps + 1), np.inf)
        acc[:, :, 0, 0] = 0.0
        for i in range(1, steps + 1):
            for j in range(1, steps + 1):
                best = np.minimum(np.minimum(acc[:, :, i - 1, j - 1], acc[:, :, i - 1, j]), acc[:, :, i, j - 1])
                acc[:, :, i, j] = cost[:, :, i - 1, j - 1] + best
        q_last = np.array([len(s) - 1 for s in block])
        pairs = np.arange(len(block))[:, None], np.arange(len(references))[None, :]
        out[start : start + len(block)] = acc[(*pairs, q_last[:, None] + 1, ref_last[None, :] + 1)]
    return out


def nearest_neighbour_dtw(data: dict[str, tuple[list[np.ndarray], np.ndarray]]) -> dict[str, Any]:
    """1NN test accuracy with DTW_D (one warping over all 12 features) and DTW_I (a warping per feature, summed)."""
    (train, y_train), (test, y_test) = data["train"], data["test"]
    started = time.perf_counter()
    dependent = dtw_distances(test, train)
    features = train[0].shape[1]
    independent = np.sum(
        [dtw_distances([s[:, [d]] for s in test], [s[:, [d]] for s in train]) for d in range(features)], axis=0
    )
    seconds = time.perf_counter() - started

    def accuracy(distances: np.ndarray) -> float:
        return float((y_train[distances.argmin(1)] == y_test).mean())

    return {"1NN-DTW_D": accuracy(dependent), "1NN-DTW_I": accuracy(independent), "seconds": seconds}


def training_spec(args: argparse.Namespace, seed: int) -> TrainingSpec:
    """Issue 29's sequence recipe: Adam 1e-3, plateau (0.5, 5, 1e-5), early stopping on val accuracy."""
    return TrainingSpec(
        epochs=args.epochs, lr=1e-3, batch_size=args.batch_size, threads=args.threads, seed=seed, grad_clip_norm=1.0,
        optimizer={"name": "adam", "weight_decay": 0.0},
        scheduler={"name": "plateau", "factor": 0.5, "patience": 5, "min_lr": 1e-5},
        loss={"name": "cross_entropy", "label_smoothing": 0.1},
        early_stopping={"enabled": True, "monitor": "val_accuracy", "mode": "max", "patience": args.patience,
                        "min_delta": 1e-3, "restore_best": True},
    )  # fmt: skip


def run_seed(source: Path, presets: list[str], seed: int, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """One ingestion (the seed's val draw), then each preset trained on it and scored on the official test split."""
    dataset_dir = str(work / f"dataset-seed{seed}")
    # The source gives train and test: test stays the official one, val is drawn from train (train:val).
    split = SplitSpec(train=1.0 - args.val_fraction, val=args.val_fraction, test=0.0, seed=seed)
    ingest_sequences(str(source), dataset_dir, length=None, split=split)
    dataset = load_sequence_dataset(dataset_dir)
    info = dataset.info
    arrays, labels = {}, {}
    for split in ("train", "val", "test"):
        sequences, lengths, labels[split] = dataset.subset(split)
        arrays[split] = {"sequences": info.standardization.apply(sequences), "lengths": lengths}
    task = SequenceClassification(arrays["train"], labels["train"], arrays["val"], labels["val"], dataset.num_classes)
    runs = []
    for preset in presets:
        torch.manual_seed(seed)
        model = build_rnn(preset, dataset.num_features, dataset.num_classes)
        started = time.perf_counter()
        fit = fit_model(model, task, training_spec(args, seed), pretrained=False)
        seconds = time.perf_counter() - started
        logits = task.predict(model, arrays["test"], 256, torch.device("cpu"))
        predicted = logits.argmax(1).numpy()
        runs.append({
            "preset": preset, "seed": seed, "version_id": info.version_id, "split_sizes": info.split_sizes,
            "length": info.length, "parameters": parameter_count(model),
            "test_accuracy": float((predicted == labels["test"]).mean()),
            "test_errors": int((predicted != labels["test"]).sum()),
            "best_val_accuracy": fit.best_val_accuracy, "epochs": len(fit.history), "best_epoch": fit.best_epoch,
            "train_seconds": seconds, "seconds_per_epoch": seconds / max(len(fit.history), 1),
        })  # fmt: skip
        print(f"{preset} seed {seed}: test {runs[-1]['test_accuracy']:.4f}, {len(fit.history)} epochs, {seconds:.1f} s",
              file=sys.stderr)  # fmt: skip
    return runs


def shipped_variant(export: dict[str, Any]) -> str | None:
    """The shipped precision: export_report.json's, else the variant whose size and latency the shipped ones are."""
    for name, artifact in export.get("artifacts", {}).items():
        uri = artifact.get("uri", "") if isinstance(artifact, dict) else str(artifact)
        if name.endswith("export_report.json") or uri.endswith("export_report.json"):
            try:
                return str(json.loads(Path(uri).read_text())["models"]["model"]["shipped"])
            except (OSError, KeyError, ValueError):
                break
    metrics = export.get("metrics", {})
    for precision in ("fp32", "fp16", "int8_dynamic", "int8_static", "int8"):
        if metrics.get(f"model_{precision}_size_mb") == metrics.get("model_size_mb") is not None and metrics.get(
            f"model_{precision}_latency_ms"
        ) == metrics.get("model_latency_ms"):
            return precision
    return None


def shown_path(path: Path) -> str:
    """`path` relative to the repository root (the plan run's working directory) where it lies inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_plan_once(run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """`rooivalk run` of the sign-language plan into `run_dir` with `overrides`; what its summary.json says."""
    command = [sys.executable, "-m", "rooivalk.cli.app", "run", PLAN, "--out", shown_path(run_dir)]
    for override in overrides:
        command += ["--set", override]
    log = run_dir.parent / f"{run_dir.name}.log"
    print(f"plan run -> {run_dir} (log {log})", file=sys.stderr)
    started = time.perf_counter()
    with log.open("w") as handle:
        returncode = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode
    seconds = time.perf_counter() - started
    shown = shlex.join([".venv/bin/python", *command[1:]])
    path = run_dir / "summary.json"
    if not path.exists():
        raise SystemExit(f"the plan run wrote no summary.json (exit {returncode}); see {log}")
    summary = json.loads(path.read_text())
    steps = summary["steps"]
    evaluate, train, export = steps["evaluate_model"], steps["train_model"], steps["export_model"]
    gates = evaluate.get("gates") or []
    evaluated = dict(evaluate.get("metrics") or {})
    report = re.search(r"report: (\S+\.json)", str(evaluate.get("error")))
    if not evaluated and report and Path(report.group(1)).exists():  # a failed gate: the step's report has them
        written = json.loads(Path(report.group(1)).read_text())
        split = written.get("split", "test")
        evaluated = {f"{split}_{k}": written[k] for k in ("accuracy", "min_class_recall", "macro_f1") if k in written}
        gates = written.get("gates") or gates
    return {
        "command": shown,
        "overrides": overrides,
        "returncode": returncode,
        "wall_seconds": seconds,
        "status": summary["status"],
        "error": summary.get("error"),
        "dataset_version": summary.get("dataset_version"),
        "gate_failed": evaluate["status"] == "failed"
        and (any(not g["passed"] for g in gates) or "GateFailure" in str(evaluate.get("error"))),
        "gates": gates,
        "step_status": {name: step["status"] for name, step in steps.items()},
        "step_seconds": {name: step["seconds"] for name, step in steps.items()},
        "ingest": steps.get("ingest_data", {}).get("metrics", {}),
        "evaluate": evaluated,
        "train": train.get("metrics", {}),
        "stages": train.get("stages"),
        "export": export.get("metrics", {}),
        "shipped": shipped_variant(export) if export["status"] == "succeeded" else None,
    }


def run_plan(source: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    """The example plan, unchanged but for data.source (and `extra`); rerun without evaluation gates when
    the unchanged run fails one, so that its figures exist."""
    out.mkdir(parents=True, exist_ok=True)
    overrides = [f"data.source={shown_path(source)}", *extra]
    attempts = [run_plan_once(out / "plan", overrides)]
    if attempts[0]["gate_failed"]:
        attempts.append(run_plan_once(out / "plan-no-gate", [*overrides, "evaluation.fail_on_gate=false"]))
    return {"plan": PLAN, "source": str(source), "overrides": overrides, "attempts": attempts}


def plan_lines(result: dict[str, Any]) -> list[str]:
    """The plan section of the report."""
    first = result["attempts"][0]
    lines = ["", f"## {plan_what(result)[0].upper()}{plan_what(result)[1:]}: {PLAN}", ""]
    lines += [f"Overrides: {', '.join(f'`{o}`' for o in result['overrides'])}.", ""]
    for attempt in result["attempts"]:
        lines += [f"    {attempt['command']}", ""]
        steps = ", ".join(f"{k} {v}" for k, v in attempt["step_status"].items())
        lines.append(f"Status {attempt['status']} (exit {attempt['returncode']}), {attempt['wall_seconds']:.0f} s "
                     f"wall; steps: {steps}.")  # fmt: skip
        if attempt["gates"]:
            lines.append("Evaluation gates: " + "; ".join(
                f"{g['metric']} {g['value'] if g['value'] is None else round(g['value'], 4)} (min {g['min']}): "
                f"{'passed' if g['passed'] else 'FAILED'}"
                for g in attempt["gates"]) + ".")  # fmt: skip
        if attempt["error"]:
            lines.append(f"Error: {attempt['error']}")
        lines.append("")
    if first["gate_failed"]:
        lines += ["The unchanged plan failed an evaluation gate (its figures: the evaluation report the failure "
                  "names); the rerun with `evaluation.fail_on_gate=false` trains afresh and gives the export "
                  "figures.", ""]  # fmt: skip

    def number(metrics: dict[str, Any], key: str, scale: float = 1.0, digits: int = 2) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else f"{scale * value:.{digits}f}"

    lines += [
        "| run | test accuracy | min class recall | train seconds | shipped | latency ms (p95) | size MB "
        "| FP32 latency ms | FP32 size MB | shipped accuracy drop |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for index, attempt in enumerate(result["attempts"]):
        ev, tr, ex = attempt["evaluate"], attempt["train"], attempt["export"]
        name = "unchanged" if index == 0 else "rerun, evaluation.fail_on_gate=false"
        lines.append(
            f"| {name} ({attempt['status']}) | {number(ev, 'test_accuracy', 100)}% "
            f"| {number(ev, 'test_min_class_recall', 1, 4)} | {number(tr, 'train_seconds', 1, 1)} "
            f"| {attempt['shipped']} "
            f"| {number(ex, 'model_latency_ms', 1, 3)} ({number(ex, 'model_latency_p95_ms', 1, 3)}) "
            f"| {number(ex, 'model_size_mb', 1, 3)} | {number(ex, 'model_fp32_latency_ms', 1, 3)} "
            f"| {number(ex, 'model_fp32_size_mb', 1, 3)} | {number(ex, 'model_accuracy_drop', 100)} points |"
        )
    ex = result["attempts"][-1]["export"]
    variants = [key[6:-8] for key in ex if key.startswith("model_") and key.endswith("_size_mb") and key[6:-8]]
    if variants:
        figures = "; ".join(
            f"{v} {number(ex, f'model_{v}_test_accuracy', 100)}%, {number(ex, f'model_{v}_latency_ms', 1, 3)} ms, "
            f"{number(ex, f'model_{v}_size_mb', 1, 3)} MB"
            for v in variants
        )
        last = result["attempts"][-1]
        lines += [
            "",
            f"Export variants (ONNX Runtime, batch 1, official test split): {figures}; PyTorch eager FP32 "
            f"{number(ex, 'latency_torch_fp32_ms', 1, 3)} ms. Shipped: {last['shipped']}. "
            f"Training: {stage_summary(last)}.",
        ]
    return lines


def stage_summary(attempt: dict[str, Any]) -> str:
    """The plan's stages as run: epochs and best val accuracy of each."""
    train = attempt["train"]
    stages = attempt.get("stages") or []
    parts = [f"stage {s['stage']} {s['epochs']:.0f} epochs (best val {s['best_val_accuracy']:.4f})" for s in stages]
    best = f"best epoch {train['best_epoch']:.0f}" if "best_epoch" in train else ""
    return ", ".join([*parts, best]) if best else ", ".join(parts)


def mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)


def summarize(runs: list[dict[str, Any]], presets: list[str], baseline: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for preset in presets:
        mine = [r for r in runs if r["preset"] == preset]
        keys = ("test_accuracy", "best_val_accuracy", "epochs", "train_seconds", "seconds_per_epoch")
        out[preset] = {"seeds": [r["seed"] for r in mine], "parameters": mine[0]["parameters"]}
        out[preset].update({key: mean_std([float(r[key]) for r in mine]) for key in keys})
        out[preset]["ratio_to_baseline"] = out[preset]["test_accuracy"][0] / baseline
    return out


def plot(summary: dict[str, Any], dtw: dict[str, Any] | None, plan: dict[str, Any] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    means = [100 * summary[n]["test_accuracy"][0] for n in names]
    stds = [100 * summary[n]["test_accuracy"][1] for n in names]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(names, means, yerr=stds, capsize=4, color="#4c72b0")
    low = 80.0
    if plan is not None and plan["attempts"][-1]["evaluate"].get("test_accuracy") is not None:
        accuracy = 100 * plan["attempts"][-1]["evaluate"]["test_accuracy"]
        ax.bar(["plan"], [accuracy], color="#8172b2")
        low = min(low, accuracy - 5)
    if dtw is not None:
        ax.axhline(
            100 * dtw["1NN-DTW_D"],
            color="#55a868",
            linestyle="--",
            label=f"1NN-DTW_D, this run {100 * dtw['1NN-DTW_D']:.2f}%",
        )
    ax.axhline(100 * PUBLISHED["accuracy"], color="#c44e52", linestyle=":",
               label="1NN-DTW_D, Bagnall et al. 2018 (recalled) 94.9%")  # fmt: skip
    ax.set_ylim(min(low, *(m - s - 2 for m, s in zip(means, stds, strict=True))), 100)
    ax.set_ylabel("test accuracy (%), official split")
    title = "JapaneseVowels: RNN presets (mean +- std over seeds)"
    ax.set_title(title + (", the example plan" if plan is not None else ""), fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plan_what(result: dict[str, Any]) -> str:
    extra = result["overrides"][1:]
    return "the example plan, unchanged but for data.source" + (f", with {', '.join(extra)}" if extra else "")


def plan_figures(result: dict[str, Any]) -> dict[str, Any]:
    """The plan run in the last JSON line: the figures of its last attempt."""
    first, last = result["attempts"][0], result["attempts"][-1]
    return {
        "what": plan_what(result),
        "plan": PLAN,
        "overrides": result["overrides"],
        "gate_failed": first["gate_failed"],
        "gates_unchanged": first["gates"],
        "unchanged_test_accuracy": first["evaluate"].get("test_accuracy"),
        "figures_from": "the rerun with evaluation.fail_on_gate=false" if len(result["attempts"]) > 1 else "the run",
        "status": [attempt["status"] for attempt in result["attempts"]],
        "test_accuracy": last["evaluate"].get("test_accuracy"),
        "test_min_class_recall": last["evaluate"].get("test_min_class_recall"),
        "train_seconds": last["train"].get("train_seconds"),
        "shipped": last["shipped"],
        "latency_ms": last["export"].get("model_latency_ms"),
        "latency_p95_ms": last["export"].get("model_latency_p95_ms"),
        "size_mb": last["export"].get("model_size_mb"),
        "fp32_size_mb": last["export"].get("model_fp32_size_mb"),
    }


def dtw_rows(dtw: dict[str, Any] | None, test_count: int, baseline: float) -> list[str]:
    """The report table's rows of the in-run 1NN-DTWs."""
    if dtw is None:
        return []
    rows = []
    for name in ("1NN-DTW_D", "1NN-DTW_I"):
        correct = round(dtw[name] * test_count)
        seconds_cell = f"{dtw['seconds']:.1f} (both DTWs)" if name == "1NN-DTW_D" else ""
        rows.append(f"| {name}, this run | | | {100 * dtw[name]:.2f}% ({correct}/{test_count}) | | | {seconds_cell} "
                    f"| | {dtw[name] / baseline:.4f} |")  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    presets = args.presets.split(",")
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise SystemExit(f"unknown preset(s) {unknown}; choose from {list(PRESETS)}")
    if not 0 < args.val_fraction < 1:
        raise SystemExit(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    seeds = [int(s) for s in args.seeds.split(",")]
    deep_seeds = [int(s) for s in args.deep_seeds.split(",")] if args.deep_seeds else seeds
    load = os.getloadavg()[0]  # other work on the cores skews the seconds (the accuracies are seeded)
    started = time.perf_counter()
    data = load_japanese_vowels()
    dtw = None if args.skip_dtw else nearest_neighbour_dtw(data)
    if dtw is not None:
        baseline = {"classifier": BASELINE, "accuracy": dtw[BASELINE], "source": "measured in this run"}
    else:
        baseline = {"classifier": BASELINE, "accuracy": PUBLISHED["accuracy"],
                    "source": "recalled from Bagnall et al. 2018, not verified (--skip-dtw)"}  # fmt: skip
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="public-sequences-") as work:  # the CSV and ingested datasets
        source = Path(work) / "japanese_vowels.csv"
        write_table(data, source)
        for seed in sorted(set(seeds) | set(deep_seeds)):
            chosen = [p for p in presets if seed in (deep_seeds if p == "deep" else seeds)]
            runs += run_seed(source, chosen, seed, args, Path(work))
    presets_seconds = time.perf_counter() - started
    plan = None
    if args.plan:
        plan_out = Path(args.plan_out or ROOT / f"runs/public-sequences-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
        plan_out.mkdir(parents=True, exist_ok=True)
        plan_source = plan_out / "japanese_vowels.csv"  # kept beside the run: its data.source
        write_table(data, plan_source)
        plan = run_plan(plan_source, plan_out, args.plan_set)
    summary = summarize(runs, presets, baseline["accuracy"])
    seconds = time.perf_counter() - started
    best = max(presets, key=lambda p: summary[p]["test_accuracy"][0])
    described = f"{machine.describe()}, torch threads {args.threads}, load average {load:.1f} at start"
    command = shlex.join([".venv/bin/python", "benchmarks/public_sequences.py", *argv])
    sizes = runs[0]["split_sizes"]
    timing = f"{seconds / 60:.1f} min" + (f", of which presets and DTW {presets_seconds / 60:.1f}" if plan else "")
    lines = [
        "# JapaneseVowels: the RNN presets against 1NN-DTW_D",
        "",
        f"Reproduce ({timing}, {described}, {datetime.date.today().isoformat()}):",
        "",
        f"    {command}",
        "",
        f"Official split: train {sizes['train'] + sizes['val']}, test {sizes['test']}; the CSV's split column gives "
        f"train and test only, and the reader draws val from train (SplitSpec train {1 - args.val_fraction:g}, val "
        f"{args.val_fraction:g}, test 0, seed = the run's seed; stratified): val {sizes['val']}, train "
        f"{sizes['train']}. {runs[0]['length']} frames stored (edge-padded), lengths fed to the model. "
        f"Adam lr 1e-3, batch {args.batch_size}, up to {args.epochs} epochs, plateau (factor 0.5, patience 5, min "
        f"1e-5), early stopping on val accuracy (patience {args.patience}, min delta 1e-3, best epoch restored), "
        "label smoothing 0.1, grad clip 1.0, no augmentation. Mean +- std (sample std) over seeds; train seconds: "
        f"wall time of `fit_model`. Baseline: {baseline['classifier']} {100 * baseline['accuracy']:.2f}%, "
        f"{baseline['source']}.",
        "",
        "| model | parameters | seeds | test accuracy | best val accuracy | epochs | train seconds | s / epoch "
        f"| / {BASELINE} |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for preset in presets:
        s = summary[preset]
        acc, val, ep, sec, per = (s[k] for k in ("test_accuracy", "best_val_accuracy", "epochs", "train_seconds",
                                                 "seconds_per_epoch"))  # fmt: skip
        lines.append(
            f"| {preset} | {s['parameters']:,} | {','.join(map(str, s['seeds']))} | {100 * acc[0]:.2f}% +- "
            f"{100 * acc[1]:.2f} | {100 * val[0]:.1f}% | {ep[0]:.0f} +- {ep[1]:.0f} | {sec[0]:.1f} +- {sec[1]:.1f} "
            f"| {per[0]:.2f} | {s['ratio_to_baseline']:.4f} |"
        )
    lines += dtw_rows(dtw, len(data["test"][1]), baseline["accuracy"])
    lines.append(f"| {PUBLISHED['classifier']}, Bagnall et al. 2018 (recalled, unverified) | | | "
                 f"{100 * PUBLISHED['accuracy']:.1f}% | | | | | |")  # fmt: skip
    lines += ["", f"Cited figure: {PUBLISHED['source']}."]
    if plan is not None:
        lines += plan_lines(plan)
    lines += ["", "Per run:", ""]
    for r in runs:
        lines.append(f"- {r['preset']} seed {r['seed']} ({r['version_id']}): test {r['test_accuracy']:.4f} "
                     f"({r['test_errors']} errors), best val {r['best_val_accuracy']:.4f}, epochs {r['epochs']} "
                     f"(best {r['best_epoch']}), {r['train_seconds']:.1f} s")  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "public_sequences.md").write_text("\n".join(lines) + "\n")
    plot(summary, dtw, plan, out / "public_sequences.png")
    record = {"command": command, "machine": described, "date": datetime.date.today().isoformat(),
              "seconds": seconds, "presets_seconds": presets_seconds, "dataset": DATASET, "baseline": baseline,
              "published": PUBLISHED, "dtw_this_run": dtw, "split": {"train": 1 - args.val_fraction,
              "val": args.val_fraction, "test": 0.0, "sizes": sizes}, "summary": summary, "runs": runs,
              "plan_run": plan}  # fmt: skip
    (out / "public_sequences.json").write_text(json.dumps(record, indent=2) + "\n")
    print("\n".join(lines))
    print(json.dumps({
        "benchmark": "public_sequences",
        "dataset": DATASET,
        "baseline": f"{baseline['classifier']} {baseline['accuracy']:.4f} ({baseline['source']})",
        "best_preset": best,
        "ratio_to_baseline": round(summary[best]["ratio_to_baseline"], 4),
        "test_accuracy": {p: summary[p]["test_accuracy"] for p in presets},
        "train_seconds": {p: summary[p]["train_seconds"] for p in presets},
        "epochs": {p: summary[p]["epochs"] for p in presets},
        "dtw_this_run": None if dtw is None else {k: round(v, 4) for k, v in dtw.items()},
        "published": {"classifier": PUBLISHED["classifier"], "accuracy": PUBLISHED["accuracy"],
                      "citation": "Bagnall et al. 2018, arXiv:1811.00075", "verified": False},
        "plan_run": None if plan is None else plan_figures(plan),
        "machine": described,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
