"""TPE with median pruning against a 3 x 3 grid, for the same trainings and for the same epochs, on signs.

Both searches run `rooivalk search` (rooivalk.search.run_search) on pipelines/plans/sign_language.yaml at
a reduced scale (--count sequences, one stage of --epochs epochs) over the GRU's size and the learning
rate: the grid tries model.architecture in {gru-32x1, gru-64x1, gru-128x2} x lr in {3e-4, 1e-3, 3e-3};
TPE samples the same architectures and lr log-uniformly in [3e-4, 3e-3], 9 trials, pruning a trial that
trails the median after 3 epochs; a third search is that TPE given the grid's epochs instead
(search.epoch_budget = 9 x --epochs, at most 40 trials): the epochs pruning saves buy more trials. Each
repetition (--repeats, default 3) uses its own seed for the data order and initial weights
(training.seed) and for TPE's sampler; the searches of a repetition share it.
Measured per repetition: the best validation accuracy each reached, its wall time, TPE's trials, pruned
trials and epochs. Writes search_vs_grid.json, search_vs_grid.png and README.md to --out; the JSON printed
last has the means, ratio_to_baseline: TPE's (9 trainings) mean best validation accuracy over the grid's
(> 1: TPE better), and budget_ratio_to_baseline: the same for TPE with the grid's epochs.

    .venv/bin/python benchmarks/search_vs_grid.py                        # ~15 min on 2 cores
    .venv/bin/python benchmarks/search_vs_grid.py --count 520 --epochs 4 --repeats 1 --out /tmp/svg
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "pipelines" / "plans" / "sign_language.yaml"
ARCHITECTURES = ["gru-32x1", "gru-64x1", "gru-128x2"]
LRS = [3e-4, 1e-3, 3e-3]
SEARCHES = {"grid": "grid", "tpe": "TPE, 9 trainings", "tpe_budget": "TPE, the grid's epochs"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1300, help="simulated sequences (the plan's: 2600)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of the one training stage")
    parser.add_argument("--repeats", type=int, default=3, help="seeds: each runs both searches")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "search"))
    return parser.parse_args(argv)


def plan(count: int, epochs: int, seed: int, data: Path, search: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(PLAN.read_text())
    raw["data"]["source"] = str(data)
    raw["data"]["simulate"]["count"] = count
    raw["training"]["seed"] = seed
    raw["training"]["threads"] = 2
    raw["training"]["early_stopping"]["enabled"] = False
    raw["training"]["stages"] = [
        {"name": "main", "epochs": epochs, "train": ["all"], "lr": {"top": 1e-3, "ratio": 1.0}}  # one LR for all
    ]
    raw["evaluation"] = {"gates": []}
    raw["search"] = {"trials": 9, "seed": seed, **search}  # search may set its own trials
    return raw


def searches(epochs: int) -> dict[str, dict[str, Any]]:
    lr_choices = {"choices": LRS}  # one LR for every layer group (top with ratio 1)
    tpe = {
        "sampler": "tpe",
        "pruner": {"kind": "median", "warmup_epochs": 3, "startup_trials": 3},
        "space": {
            "model.architecture": {"choices": ARCHITECTURES},
            "training.stages.0.lr.top": {"low": LRS[0], "high": LRS[-1], "log": True},
        },
    }
    return {
        "grid": {
            "sampler": "grid",
            "pruner": {"kind": "none"},
            "space": {
                "model.architecture": {"choices": ARCHITECTURES},
                "training.stages.0.lr.top": lr_choices,
            },
        },
        "tpe": tpe,
        "tpe_budget": {**tpe, "trials": 40, "epoch_budget": 9 * epochs},  # the grid's 9 x epochs
    }


def run(raw: dict[str, Any], out: Path) -> dict[str, Any]:
    from rooivalk.search import run_search

    started = time.perf_counter()
    report = run_search(raw, str(PLAN), out, say=print)
    assert report.best is not None
    return {
        "best_val_accuracy": report.best["value"],
        "best_params": report.best["params"],
        "seconds": time.perf_counter() - started,
        "counts": report.counts(),
        "trials": len(report.trials),
        "epochs_trained": sum(trial["epochs"] for trial in report.trials),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.0, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    accuracy, seconds = figure.subplots(1, 2)
    seeds = [str(r["seed"]) for r in result["repeats"]]
    for offset, (name, label) in zip((-0.27, 0.0, 0.27), SEARCHES.items(), strict=True):
        xs = [i + offset for i in range(len(seeds))]
        accuracy.bar(xs, [r[name]["best_val_accuracy"] for r in result["repeats"]], width=0.27, label=label)
        seconds.bar(xs, [r[name]["seconds"] for r in result["repeats"]], width=0.27, label=label)
    for axes, label in ((accuracy, "best validation accuracy"), (seconds, "wall seconds")):
        axes.set_xticks(range(len(seeds)), seeds)
        axes.set(xlabel="seed", ylabel=label)
        axes.legend(fontsize="small")
    low = min(r[name]["best_val_accuracy"] for r in result["repeats"] for name in SEARCHES)
    accuracy.set_ylim(max(low - 0.05, 0.0), 1.0)
    figure.savefig(path)


def readme(result: dict[str, Any]) -> str:
    grid_epochs = 9 * result["epochs"]
    lines = [
        "# Search: TPE with median pruning against a 3 x 3 grid, for the same trainings and the same epochs",
        "",
        f"`{result['plan']}` at {result['count']} sequences, one stage of {result['epochs']} epochs, over "
        "model.architecture (gru-32x1, gru-64x1, gru-128x2) and the learning rate (grid 3e-4 / 1e-3 / 3e-3; "
        "TPE log-uniform in [3e-4, 3e-3]), objective the best epoch's validation accuracy. TPE prunes a trial "
        "that trails the median after 3 epochs; it runs once with the grid's 9 trainings and once with the "
        f"grid's {grid_epochs} epochs (`search.epoch_budget: {grid_epochs}`), where pruned epochs buy more trials.",
        f"Machine: {result['machine']}. Command: "
        f"`{' '.join(['.venv/bin/python benchmarks/search_vs_grid.py', *result['argv']])}`.",
        "",
        "| seed | grid best val acc | grid s | TPE 9 trainings | s | pruned | epochs | TPE grid's epochs | s | "
        "trials | pruned | epochs |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["repeats"]:
        grid, tpe, budget = r["grid"], r["tpe"], r["tpe_budget"]
        lines.append(
            f"| {r['seed']} | {grid['best_val_accuracy']:.4f} | {grid['seconds']:.0f} | "
            f"{tpe['best_val_accuracy']:.4f} | {tpe['seconds']:.0f} | {tpe['counts'].get('pruned', 0)} | "
            f"{tpe['epochs_trained']} | {budget['best_val_accuracy']:.4f} | {budget['seconds']:.0f} | "
            f"{budget['trials']} | {budget['counts'].get('pruned', 0)} | {budget['epochs_trained']} |"
        )
    lines += [
        "",
        f"Mean best validation accuracy: grid {result['grid_mean']:.4f}, TPE with 9 trainings "
        f"{result['tpe_mean']:.4f} (ratio_to_baseline {result['ratio_to_baseline']:.4f}), TPE with the grid's "
        f"epochs {result['tpe_budget_mean']:.4f} (budget_ratio_to_baseline {result['budget_ratio_to_baseline']:.4f}); "
        f"mean wall time: grid {result['grid_seconds_mean']:.0f} s, TPE {result['tpe_seconds_mean']:.0f} s, "
        f"TPE with the grid's epochs {result['tpe_budget_seconds_mean']:.0f} s. One validation sequence is "
        f"{1 / result['val_size']:.4f} of accuracy ({result['val_size']} sequences).",
        "",
        "![search vs grid](search_vs_grid.png)",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> dict[str, Any]:
    from rooivalk import machine

    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    repeats = []
    with tempfile.TemporaryDirectory(prefix="search-vs-grid-") as scratch:
        work = Path(scratch)
        for seed in range(args.repeats):
            row: dict[str, Any] = {"seed": seed}
            for name, search in searches(args.epochs).items():
                print(f"seed {seed}: {name}")
                raw = plan(args.count, args.epochs, seed, work / "signs.parquet", search)
                row[name] = run(raw, work / f"{name}-{seed}")
            repeats.append(row)
    means = {name: sum(r[name]["best_val_accuracy"] for r in repeats) / len(repeats) for name in SEARCHES}
    result = {
        "benchmark": "search_vs_grid",
        "machine": machine.describe(),
        "plan": str(PLAN.relative_to(ROOT)),
        "count": args.count,
        "val_size": round(args.count * 0.15),  # the plan's split: 70 / 15 / 15
        "epochs": args.epochs,
        "argv": argv,
        "repeats": repeats,
        **{f"{name}_mean": means[name] for name in SEARCHES},
        **{f"{name}_seconds_mean": sum(r[name]["seconds"] for r in repeats) / len(repeats) for name in SEARCHES},
        "tpe_wins": sum(r["tpe"]["best_val_accuracy"] > r["grid"]["best_val_accuracy"] for r in repeats),
        "tpe_budget_wins": sum(r["tpe_budget"]["best_val_accuracy"] > r["grid"]["best_val_accuracy"] for r in repeats),
        "ratio_to_baseline": means["tpe"] / means["grid"],
        "budget_ratio_to_baseline": means["tpe_budget"] / means["grid"],
    }
    (out / "search_vs_grid.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "search_vs_grid.png")
    (out / "README.md").write_text(readme(result))
    keys = (
        *(f"{name}_mean" for name in SEARCHES),
        *(f"{name}_seconds_mean" for name in SEARCHES),
        "tpe_wins",
        "tpe_budget_wins",
        "ratio_to_baseline",
        "budget_ratio_to_baseline",
    )
    return {"benchmark": "search_vs_grid", **{key: result[key] for key in keys}}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
