"""Progressive unfreezing against its baselines on real data, at an equal epoch budget.

ImageNet EfficientNet-Lite0 on Fashion-MNIST, through the library's own `train_model` and
`evaluate_model`, one dataset ingested once, N seeds per schedule:

- scratch: no weights, one stage over all groups, LR 1e-3;
- head_only: pretrained, one stage over the classifier, LR 1e-3;
- full_finetune: pretrained, one stage over all groups, LR 1e-3 (the baseline: ENVIRONMENT.md
  measured it as the strongest);
- progressive: head 1e-3 (1 epoch); last:2 + head, backbone [1e-5, 1e-4], head 1e-3 (1 epoch);
  all groups, spread [1e-7, 1e-3] (the rest of the budget);
- progressive_ulmfit: the same, but the last stage's LRs are ULMFiT's (top 1e-3, ratio 2.6).

The test set is the official t10k split (10,000 images) unless --per-class caps the whole dataset
(for smoke runs: the cap applies to train and test alike). Training is subsampled per epoch with
`training.max_train_batches` instead: an "epoch" is --max-train-batches batches of a fresh random
order of the 56.5k-image training split; 5% of the non-test data (3.5k images) is validation, which
picks each run's best epoch.

Expected time at the defaults (32 px, 3 epochs x 150 batches x 64 = 28,800 training images per run,
3 seeds, 5 schedules) on 2 otherwise idle cores. Training, from ENVIRONMENT.md's images/s at 32 px
(full fine-tune 860, last two groups + head 1477, head only 4366), per seed: scratch 33 s +
head_only 7 s + full_finetune 33 s + progressive 20 s + progressive_ulmfit 20 s = 113 s.
Validation runs in channels_last (~2,900 images/s measured here): 15 x 3.5k images = 18 s per seed.
`evaluate_model` predicts in channels_last too: 5 x 10k test images = ~17 s per seed. Model building,
weights and checkpoints: ~10 s per seed. So ~160 s per seed and ~8 minutes in all.

    .venv/bin/python benchmarks/unfreezing.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rooivalk.data.dataset import load_dataset
from rooivalk.data.ingest import ingest_data
from rooivalk.evaluation.evaluate import evaluate_model
from rooivalk.plan import DataSpec, Plan
from rooivalk.training.loop import ProgressFn
from rooivalk.training.trainer import train_model

REPO = Path(__file__).resolve().parents[1]
SCHEDULES = ("scratch", "head_only", "full_finetune", "progressive", "progressive_ulmfit")
BASELINE = "full_finetune"
LABELS = {
    "scratch": "from scratch, all groups, LR 1e-3",
    "head_only": "head only, LR 1e-3",
    "full_finetune": "full fine-tune, one LR 1e-3",
    "progressive": "progressive: head; last:2+head; all [1e-7, 1e-3]",
    "progressive_ulmfit": "progressive, last stage ULMFiT (top 1e-3, ratio 2.6)",
}
LR = 1e-3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per schedule")
    parser.add_argument("--epochs", type=int, default=3, help="epoch budget of every schedule")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--max-train-batches", type=int, default=150, help="batches per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--schedules", default=",".join(SCHEDULES), help=f"comma-separated subset of {SCHEDULES}")
    parser.add_argument("--per-class", type=int, default=None, help="cap samples per class (train AND test)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads; default: all cores")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--weights", default=str(REPO / ".cache/weights/tf_efficientnet_lite0.pth"))
    parser.add_argument("--out-md", default=str(REPO / "docs/results/unfreezing.md"))
    parser.add_argument("--out-json", default=str(REPO / "docs/results/unfreezing.json"))
    parser.add_argument("--work-dir", default=None, help="kept; its ingested dataset is reused (default: a temp dir)")
    args = parser.parse_args(argv)
    args.schedule_list = [s.strip() for s in args.schedules.split(",") if s.strip()]
    unknown = sorted(set(args.schedule_list) - set(SCHEDULES))
    if unknown or not args.schedule_list:
        parser.error(f"--schedules: unknown {unknown}; choose from {SCHEDULES}")
    return args


# -- plans ----------------------------------------------------------------------------------------
def stage_specs(schedule: str, epochs: int) -> list[dict[str, Any]]:
    """The schedule's stages; the progressive ones give 1 + 1 epochs to the first two stages and the
    rest of the budget (at least 1 epoch, so a budget under 3 is exceeded) to the last."""
    if schedule in ("scratch", "full_finetune"):
        return [{"name": "all", "epochs": epochs, "train": ["all"], "lr": {"spread": [LR, LR]}}]
    if schedule == "head_only":
        return [{"name": "head", "epochs": epochs, "train": ["head"], "lr": {"head": LR}}]
    last_lr = {"top": LR, "ratio": 2.6} if schedule == "progressive_ulmfit" else {"spread": [1e-7, LR]}
    return [
        {"name": "head", "epochs": 1, "train": ["head"], "lr": {"head": LR}},
        {"name": "top", "epochs": 1, "train": ["last:2", "head"], "lr": {"head": LR, "backbone": [1e-5, 1e-4]}},
        {"name": "all", "epochs": max(1, epochs - 2), "train": ["all"], "lr": last_lr},
    ]


def data_spec(args: argparse.Namespace) -> DataSpec:
    # Official t10k test split; 5% of the rest validates (selects the best epoch) and 80% trains.
    return DataSpec.model_validate(
        {
            "source": args.data,
            "format": "idx",
            "split": {"train": 0.80, "val": 0.05, "test": 0.15, "seed": 0},
            "max_samples_per_class": args.per_class,
        }
    )


def make_plan(schedule: str, seed: int, args: argparse.Namespace) -> Plan:
    return Plan.model_validate(
        {
            "name": f"unfreezing-{schedule.replace('_', '-')}",
            "data": data_spec(args).model_dump(mode="json"),
            "model": {
                "architecture": "tf_efficientnet_lite0",
                "pretrained": None if schedule == "scratch" else args.weights,
                "input_size": args.input_size,
            },
            "training": {
                "batch_size": args.batch_size,
                "stages": stage_specs(schedule, args.epochs),
                "seed": seed,
                "threads": args.threads,
                "max_train_batches": args.max_train_batches,
            },
            "evaluation": {"gates": []},
        }
    )


# -- running --------------------------------------------------------------------------------------
def prepare_dataset(args: argparse.Namespace, work_dir: Path) -> str:
    """Ingest once; a --work-dir holding the same data spec's dataset is reused."""
    dataset_dir = work_dir / "dataset"
    marker = work_dir / "dataset_spec.json"
    wanted = data_spec(args).model_dump_json()
    if (dataset_dir / "dataset.json").is_file() and marker.is_file() and marker.read_text() == wanted:
        log(f"reusing the dataset at {dataset_dir}")
        return str(dataset_dir)
    shutil.rmtree(dataset_dir, ignore_errors=True)
    started = time.perf_counter()
    result = ingest_data(data_spec(args), str(dataset_dir))
    marker.write_text(wanted)
    log(f"ingested {result.info.split_sizes} in {time.perf_counter() - started:.1f} s")
    return str(dataset_dir)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def progress_printer(label: str) -> ProgressFn:
    def show(event: dict[str, Any]) -> None:
        if event.get("event") == "epoch_end":
            log(
                f"  {label} {event['stage']} epoch {event['epoch']}/{event['epochs']}: "
                f"val {event['val_accuracy']:.4f}, {event['images_per_second']:.0f} img/s"
            )

    return show


def run_one(schedule: str, seed: int, args: argparse.Namespace, dataset_dir: str, work_dir: Path) -> dict[str, Any]:
    plan = make_plan(schedule, seed, args)
    run_dir = work_dir / "runs" / f"{schedule}-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    trained = train_model(plan, dataset_dir, str(run_dir / "model"), progress=progress_printer(f"{schedule}/{seed}"))
    evaluated = evaluate_model(plan, str(run_dir / "model"), dataset_dir, str(run_dir / "eval"))
    wall = time.perf_counter() - started
    shutil.rmtree(run_dir, ignore_errors=True)  # ~14 MB of weights per run; the figures are below
    record = {
        "schedule": schedule,
        "seed": seed,
        "test_accuracy": evaluated.metrics["test_accuracy"],
        "test_samples": int(evaluated.metrics["test_samples"]),
        "best_val_accuracy": trained.metrics["best_val_accuracy"],
        "best_epoch": int(trained.metrics["best_epoch"]),
        "epochs": int(sum(stage["epochs"] for stage in trained.stages)),
        "train_seconds": trained.metrics["train_seconds"],
        "wall_seconds": wall,
        "stages": trained.stages,
    }
    log(f"{schedule} seed {seed}: test {record['test_accuracy']:.4f} in {wall:.0f} s")
    return record


# -- summary --------------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: list[dict[str, Any]], schedules: list[str]) -> dict[str, dict[str, Any]]:
    summary = {}
    for schedule in schedules:
        mine = [r for r in runs if r["schedule"] == schedule]
        mean, std = _mean_std([r["test_accuracy"] for r in mine])
        stage_rows = []
        for index, stage in enumerate(mine[0]["stages"]):
            per_seed = [r["stages"][index] for r in mine]
            stage_rows.append(
                {
                    "stage": stage["stage"],
                    "epochs": stage["epochs"],
                    "trainable_share": stage["trainable_share"],
                    "lr_min": min(stage["groups"].values()),
                    "lr_max": max(stage["groups"].values()),
                    "best_val_accuracy": statistics.fmean(s["best_val_accuracy"] for s in per_seed),
                    "seconds": statistics.fmean(s["seconds"] for s in per_seed),
                }
            )
        summary[schedule] = {
            "mean": mean,
            "std": std,
            "runs": len(mine),
            "epochs": mine[0]["epochs"],
            "train_seconds_mean": statistics.fmean(r["train_seconds"] for r in mine),
            "wall_seconds_mean": statistics.fmean(r["wall_seconds"] for r in mine),
            "stages": stage_rows,
        }
    return summary


def _versus(summary: dict[str, dict[str, Any]], name: str, other: str) -> str:
    a, b = summary[name], summary[other]
    diff = (a["mean"] - b["mean"]) * 100
    noise = max(a["std"], b["std"]) * 100
    verdict = "beat" if diff > 0 else "did not beat"
    within = " (within seed noise)" if abs(diff) <= noise else ""
    return f"{name} {verdict} {other}: {a['mean']:.4f} vs {b['mean']:.4f} ({diff:+.2f} pt{within})"


def _reasons(summary: dict[str, dict[str, Any]], name: str, budget: int, input_size: int) -> list[str]:
    """Likely causes of a weak progressive schedule, read off its per-stage numbers."""
    stages = summary[name]["stages"]
    reasons = []
    for before, after in zip(stages, stages[1:], strict=False):
        if after["best_val_accuracy"] < before["best_val_accuracy"]:
            reasons.append(
                f"validation accuracy fell from {before['best_val_accuracy']:.4f} ({before['stage']}) to "
                f"{after['best_val_accuracy']:.4f} ({after['stage']}) at an unfreeze: BatchNorm in the newly "
                "trainable groups switches from stored ImageNet statistics to batch statistics"
            )
    last = stages[-1]
    reasons.append(
        f"only {last['epochs']:.0f} of {budget} epochs trained all groups ({last['trainable_share']:.0%} of the "
        f"parameters), against {budget} for full fine-tuning"
    )
    if last["lr_min"] < LR / 100:
        reasons.append(
            f"the earliest groups' LR ({last['lr_min']:.1e}) barely moves weights that must adapt from 224 px "
            f"colour ImageNet to {input_size} px grayscale"
        )
    return reasons


def make_note(summary: dict[str, dict[str, Any]], budget: int, input_size: int) -> str:
    lines: list[str] = []
    for name in ("progressive", "progressive_ulmfit"):
        if name not in summary:
            continue
        rivals = ("head_only", "scratch", BASELINE) + (("progressive",) if name == "progressive_ulmfit" else ())
        present = [other for other in rivals if other in summary]
        lines.extend(f"- {_versus(summary, name, other)}." for other in present)
        if BASELINE in summary:
            mine, base = summary[name]["train_seconds_mean"], summary[BASELINE]["train_seconds_mean"]
            lines.append(f"- {name} trained for {mine:.0f} s against {base:.0f} s for {BASELINE} ({mine / base:.2f}x).")
        lost = [
            other for other in present if other != "progressive" and summary[name]["mean"] <= summary[other]["mean"]
        ]
        if lost:
            lines.append(f"- Likely reasons {name} did not beat {', '.join(lost)}:")
            lines.extend(f"  - {reason}." for reason in _reasons(summary, name, budget, input_size))
    if not lines:
        lines.append("- No progressive schedule in this run: nothing to compare.")
    return "\n".join(lines)


def write_markdown(path: str, summary: dict[str, dict[str, Any]], args: argparse.Namespace, command: str) -> None:
    test_samples = args.test_samples
    lines = [
        "# Progressive unfreezing vs. its baselines (Fashion-MNIST, EfficientNet-Lite0)",
        "",
        f"Reproduce: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}. "
        f"Every schedule gets the same budget of {args.epochs} epochs x {args.max_train_batches} batches x "
        f"{args.batch_size} images at {args.input_size} px (AdamW, weight decay 0.05, cosine per stage, label "
        f"smoothing 0.1, hflip 0.5); seeds 0..{args.seeds - 1}. Test: {test_samples} images "
        f"({'the official t10k split' if args.per_class is None else f'capped at {args.per_class} per class'}); "
        "the best validation epoch of each run is evaluated.",
        "",
        "| schedule | what | epochs | test accuracy (mean ± std) | train s (mean) | wall s (mean) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {LABELS[name]} | {s['epochs']} | {s['mean']:.4f} ± {s['std']:.4f} | "
            f"{s['train_seconds_mean']:.0f} | {s['wall_seconds_mean']:.0f} |"
        )
    over = [name for name, s in summary.items() if s["epochs"] != args.epochs]
    if over:
        lines += ["", f"Over budget: {', '.join(over)} need one epoch per stage and ran more than {args.epochs}."]
    lines += [
        "",
        "## Per stage (mean over seeds)",
        "",
        "| schedule | stage | epochs | trainable share | LRs | best val accuracy | seconds |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for name, s in summary.items():
        for row in s["stages"]:
            lrs = (
                f"{row['lr_min']:.0e}"
                if row["lr_min"] == row["lr_max"]
                else f"{row['lr_min']:.0e}..{row['lr_max']:.0e}"
            )
            lines.append(
                f"| {name} | {row['stage']} | {row['epochs']:.0f} | {row['trainable_share']:.1%} | {lrs} | "
                f"{row['best_val_accuracy']:.4f} | {row['seconds']:.0f} |"
            )
    lines += ["", "## Note", "", make_note(summary, args.epochs, args.input_size), ""]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines))


def result_line(summary: dict[str, dict[str, Any]], args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    ratio = None
    if "progressive" in summary and BASELINE in summary:
        ratio = summary["progressive"]["mean"] / summary[BASELINE]["mean"]
    result: dict[str, Any] = {"benchmark": "unfreezing"}
    for name, s in summary.items():
        result[f"{name}_mean"] = round(s["mean"], 4)
        result[f"{name}_std"] = round(s["std"], 4)
        result[f"{name}_train_seconds"] = round(s["train_seconds_mean"], 1)
    result.update(
        {
            "ratio": round(ratio, 4) if ratio is not None else None,
            "ratio_of": f"progressive_mean / {BASELINE}_mean",
            "seeds": args.seeds,
            "epochs": args.epochs,
            "input_size": args.input_size,
            "max_train_batches": args.max_train_batches,
            "batch_size": args.batch_size,
            "per_class": args.per_class,
            "test_samples": args.test_samples,
            "schedules": list(summary),
            "seconds": round(seconds, 1),
            "out_md": args.out_md,
            "out_json": args.out_json,
        }
    )
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(
        [".venv/bin/python benchmarks/unfreezing.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]
    )
    for needed in (args.data, args.weights):
        if not Path(needed).exists():
            raise SystemExit(f"missing {needed}: run `make data weights` first")
    started = time.perf_counter()
    temp = None if args.work_dir else tempfile.mkdtemp(prefix="rooivalk-unfreezing-")
    work_dir = Path(args.work_dir or temp or "")
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        dataset_dir = prepare_dataset(args, work_dir)
        args.test_samples = len(load_dataset(dataset_dir).subset("test")[1])
        runs = [
            run_one(schedule, seed, args, dataset_dir, work_dir)
            for seed in range(args.seeds)
            for schedule in args.schedule_list
        ]
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    summary = summarize(runs, args.schedule_list)
    seconds = time.perf_counter() - started
    write_markdown(args.out_md, summary, args, command)
    result = result_line(summary, args, seconds)
    Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_json).write_text(
        json.dumps({"command": command, "result": result, "summary": summary, "runs": runs}, indent=2)
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
