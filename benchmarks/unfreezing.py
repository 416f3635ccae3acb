"""Staged fine-tuning against plain fine-tuning at equal wall-clock budgets, on real images.

ImageNet EfficientNet-Lite0 through the library's own `train_model` and `evaluate_model`; every
schedule gets the same `training.budget_seconds` (its last stage runs `seconds: rest`, sized at its
start from a timed probe of its own step), so faster stages buy more steps:

- full_finetune (the baseline): one stage over all groups, one LR 1e-3, cosine with 5% warmup;
- reference: the reference plan's three stages (docs/reference_plan.md): the head at 1e-3 (1 epoch);
  the last two groups + head, backbone [1e-5, 1e-4], head 1e-3 (1 epoch); all groups at [1e-7, 1e-3]
  (the rest), stored BN statistics;
- auto: the library default (`schedule: auto`): BN statistics re-estimated on target data, the head
  on cached backbone features of a 10k subset (5 epochs), then all groups at 1e-3, new groups
  warming up over 10% of the stage;
- ablations of auto: auto_keep (pretrained BN statistics kept), auto_affine (BN affines train from
  the start; the head stage then runs uncached), auto_stlr (slanted triangular LR in the last stage).

Datasets: `fashion` (Fashion-MNIST from Debian's dataset-fashion-mnist: the official 60k training
images split 56,470 train / 3,530 val, the official 10k test, 48 px) and `digits` (scikit-learn's
bundled 1,797 scanned handwritten digits, 8x8 upscaled to 32 px; 70/10/20 split): a second,
different real image set.

Runs are appended to --runs (JSON lines) and skipped when already there, so the grid can be filled
over several invocations; the Markdown, JSON and PNG are written from every recorded run
(benchmarks/reports/unfreezing.py, default docs/results/unfreezing/unfreezing[_digits]).

    .venv/bin/python benchmarks/unfreezing.py --budgets 300,600 --seeds 0,1,2
    .venv/bin/python benchmarks/unfreezing.py --dataset digits --budgets 20,40 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rooivalk import machine
from rooivalk.data.dataset import load_dataset
from rooivalk.data.ingest import ingest_data
from rooivalk.evaluation.evaluate import evaluate_model
from rooivalk.events import ProgressFn
from rooivalk.plan import DataSpec, Plan, apply_overrides
from rooivalk.training.trainer import train_model

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file: the helpers import from the benchmarks package
    sys.path.insert(0, str(REPO))

from benchmarks.analysis.unfreezing import BASELINE, DEFAULT, SCHEDULES, speed_adjusted_gaps, summarize  # noqa: E402
from benchmarks.reports.unfreezing import default_out, write_report  # noqa: E402

DATASETS: dict[str, dict[str, Any]] = {
    "fashion": {"input_size": 48, "target": 0.93, "split": {"train": 0.80, "val": 0.05, "test": 0.15, "seed": 0}},
    "digits": {"input_size": 32, "target": 0.97, "split": {"train": 0.70, "val": 0.10, "test": 0.20, "seed": 0}},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="fashion")
    parser.add_argument("--budgets", default="300,600", help="training budgets in seconds, comma-separated")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--schedules", default="full_finetune,reference,auto", help=f"subset of {SCHEDULES}")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads; default: all cores")
    parser.add_argument("--fashion", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--weights", default=str(REPO / ".cache/weights/tf_efficientnet_lite0.pth"))
    parser.add_argument("--out", default=None, help="output stem (default docs/results/unfreezing/unfreezing[_digits])")
    parser.add_argument("--runs", default=None, help="JSON lines of finished runs (default <out>.runs.jsonl)")
    parser.add_argument("--work-dir", default=None, help="kept; its ingested dataset is reused")
    parser.add_argument("--set", action="append", default=[], help="plan override key.path=value (repeatable)")
    parser.add_argument("--report-only", action="store_true", help="write the report from --runs, train nothing")
    args = parser.parse_args(argv)
    args.budget_list = [float(b) for b in args.budgets.split(",") if b.strip()]
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.schedule_list = [s.strip() for s in args.schedules.split(",") if s.strip()]
    unknown = sorted(set(args.schedule_list) - set(SCHEDULES))
    if unknown or not args.schedule_list:
        parser.error(f"--schedules: unknown {unknown}; choose from {SCHEDULES}")
    args.out = args.out or str(default_out(args.dataset))
    args.runs = args.runs or f"{args.out}.runs.jsonl"
    args.input_size = DATASETS[args.dataset]["input_size"]
    args.target = DATASETS[args.dataset]["target"]
    return args


# -- plans ----------------------------------------------------------------------------------------
def training_section(schedule: str) -> dict[str, Any]:
    """The schedule's `training` keys besides batch size, seed, threads and budget."""
    if schedule == "full_finetune":
        stage = {"name": "all", "seconds": "rest", "train": ["all"], "lr": {"spread": [1e-3, 1e-3]}}
        return {"stages": [stage]}
    if schedule == "reference":
        return {
            "bn_unfreeze": "keep",
            "scheduler": {"new_group_warmup_fraction": 0.0},
            "stages": [
                {"name": "head", "epochs": 1, "train": ["head"], "lr": {"head": 1e-3}},
                {
                    "name": "top",
                    "epochs": 1,
                    "train": ["last:2", "head"],
                    "lr": {"head": 1e-3, "backbone": [1e-5, 1e-4]},
                },
                {"name": "all", "seconds": "rest", "train": ["all"], "lr": {"spread": [1e-7, 1e-3]}},
            ],
        }
    auto: dict[str, Any] = {"schedule": "auto"}
    if schedule == "auto_keep":
        auto["bn_unfreeze"] = "keep"
    elif schedule == "auto_affine":
        # affine_early changes the frozen backbone, so the head stage cannot use cached features:
        # written out as explicit stages equal to auto's but uncached.
        auto = {
            "bn_unfreeze": "affine_early",
            "stages": [
                {"name": "head", "epochs": 1, "train": ["head"], "lr": {"head": 3e-3}},
                {
                    "name": "all",
                    "seconds": "rest",
                    "train": ["all"],
                    "lr": {"spread": [1e-3, 1e-3]},
                    "scheduler": {"warmup_fraction": 0.05, "new_group_warmup_fraction": 0.1},
                },
            ],
        }
    elif schedule == "auto_stlr":
        auto["auto"] = {"scheduler": {"name": "slanted_triangular", "new_group_warmup_fraction": 0.1}}
    return auto


def data_spec(args: argparse.Namespace, source: str) -> DataSpec:
    return DataSpec.model_validate(
        {
            "source": source,
            "format": "idx" if args.dataset == "fashion" else "image_folder",
            "split": DATASETS[args.dataset]["split"],
            "image_size": 28 if args.dataset == "fashion" else 8,
        }
    )


def make_plan(schedule: str, seed: int, budget: float, args: argparse.Namespace, dataset_dir: str) -> Plan:
    raw = {
        "name": f"unfreezing-{schedule.replace('_', '-')}",
        "data": {"source": dataset_dir, "format": "image_folder"},
        "model": {"architecture": "tf_efficientnet_lite0", "pretrained": args.weights, "input_size": args.input_size},
        "training": {
            "batch_size": args.batch_size,
            "seed": seed,
            "threads": args.threads,
            "budget_seconds": budget,
            **training_section(schedule),
        },
        "evaluation": {"gates": []},
    }
    return Plan.model_validate(apply_overrides(raw, args.set))


# -- data -----------------------------------------------------------------------------------------
def write_digits(folder: Path) -> str:
    """scikit-learn's bundled digits (real 8x8 scans, 16 grey levels) as a PNG class-folder tree."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        path = folder / str(label) / f"{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * (255 / 16)).astype(np.uint8)).save(path)
    return str(folder)


def prepare_dataset(args: argparse.Namespace, work_dir: Path) -> str:
    """Ingest once through the library; a --work-dir holding the same spec's dataset is reused."""
    dataset_dir, marker = work_dir / "dataset", work_dir / "dataset_spec.json"
    source = args.fashion if args.dataset == "fashion" else str(work_dir / "digits-png")
    wanted = data_spec(args, source).model_dump_json()
    if (dataset_dir / "dataset.json").is_file() and marker.is_file() and marker.read_text() == wanted:
        return str(dataset_dir)
    shutil.rmtree(dataset_dir, ignore_errors=True)
    if args.dataset == "digits":
        write_digits(Path(source))
    result = ingest_data(data_spec(args, source), str(dataset_dir))
    marker.write_text(wanted)
    log(f"ingested {result.info.split_sizes}")
    return str(dataset_dir)


# -- running --------------------------------------------------------------------------------------
def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def curve_recorder(label: str, curve: list[tuple[float, float]], started: float) -> ProgressFn:
    """Records (seconds since train_model was called, val accuracy) at every epoch end."""

    def record(event: dict[str, Any]) -> None:
        if event.get("event") == "epoch_end":
            curve.append((time.perf_counter() - started, float(event["val_accuracy"])))
            log(f"  {label} {event['stage']} {event['epoch']}/{event['epochs']}: val {event['val_accuracy']:.4f}")
        elif event.get("event") == "message":
            log(f"  {label} {event['text']}")

    return record


def run_one(schedule: str, seed: int, budget: float, args: argparse.Namespace, dataset_dir: str) -> dict[str, Any]:
    plan = make_plan(schedule, seed, budget, args, dataset_dir)
    with tempfile.TemporaryDirectory(prefix="rooivalk-unfreezing-run-") as run_dir:
        curve: list[tuple[float, float]] = []
        started = time.perf_counter()
        label = f"{schedule}/{budget:.0f}s/seed{seed}"
        trained = train_model(plan, dataset_dir, f"{run_dir}/model", progress=curve_recorder(label, curve, started))
        train_wall = time.perf_counter() - started
        evaluated = evaluate_model(plan, f"{run_dir}/model", dataset_dir, f"{run_dir}/eval")
    record = {
        "dataset": args.dataset,
        "schedule": schedule,
        "seed": seed,
        "budget_seconds": budget,
        "overrides": args.set,
        "test_accuracy": evaluated.metrics["test_accuracy"],
        "test_samples": int(evaluated.metrics["test_samples"]),
        "best_val_accuracy": trained.metrics["best_val_accuracy"],
        "train_seconds": trained.metrics["train_seconds"],
        "train_wall_seconds": train_wall,
        "machine": machine.describe(),  # budgets buy steps at this CPU's speed: runs compare on one CPU
        "curve": curve,
        "stages": trained.stages,
    }
    log(f"{label}: test {record['test_accuracy']:.4f}, training {train_wall:.0f} s wall")
    return record


def load_runs(path: str) -> list[dict[str, Any]]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def run_grid(args: argparse.Namespace) -> None:
    """Train and test every (budget, seed, schedule) not yet in --runs, appending each as it ends."""
    needed = [args.weights] + ([args.fashion] if args.dataset == "fashion" else [])
    for path in needed:
        if not Path(path).exists():
            raise SystemExit(f"missing {path}: run `make data weights` first")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="rooivalk-unfreezing-"))
    work.mkdir(parents=True, exist_ok=True)
    dataset_dir = prepare_dataset(args, work)
    load_dataset(dataset_dir)  # fail early on a broken dataset
    Path(args.runs).parent.mkdir(parents=True, exist_ok=True)
    for budget in args.budget_list:
        for seed in args.seed_list:
            for schedule in args.schedule_list:
                done = {
                    (r["schedule"], r["seed"], r["budget_seconds"], tuple(r.get("overrides", [])))
                    for r in load_runs(args.runs)
                }
                if (schedule, seed, budget, tuple(args.set)) in done:
                    continue
                record = run_one(schedule, seed, budget, args, dataset_dir)
                with open(args.runs, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(
        [".venv/bin/python benchmarks/unfreezing.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]
    )
    if not args.report_only:
        run_grid(args)
    runs = [r for r in load_runs(args.runs) if r["dataset"] == args.dataset]
    rows = summarize(runs, args.target)
    gaps = speed_adjusted_gaps(runs)
    write_report(rows, runs, gaps, args, command)
    result: dict[str, Any] = {"benchmark": "unfreezing", "dataset": args.dataset}
    for budget in sorted({r["budget_seconds"] for r in rows}):
        at = {r["variant"]: r for r in rows if r["budget_seconds"] == budget}
        for name, r in at.items():
            result[f"{name}_{budget:.0f}s_mean"] = round(r["mean"], 4)
        if DEFAULT in at and BASELINE in at:
            result[f"ratio_{budget:.0f}s"] = round(at[DEFAULT]["mean"] / at[BASELINE]["mean"], 4)
        if budget in gaps:
            result[f"speed_adjusted_gap_{budget:.0f}s_pt"] = round(gaps[budget].gap_pt, 3)
            result[f"speed_adjusted_stderr_{budget:.0f}s_pt"] = round(gaps[budget].stderr_pt, 3)
    result["ratio_of"] = f"{DEFAULT}_mean / {BASELINE}_mean at the same budget"
    Path(f"{args.out}.json").write_text(json.dumps({"command": command, "result": result, "rows": rows}, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
