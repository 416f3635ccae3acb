"""The unfreezing study's report: the accuracy-vs-wall-time plot, the verdicts and the Markdown table
that benchmarks/unfreezing.py writes from every recorded run."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.analysis.unfreezing import (
    BASELINE,
    DEFAULT,
    SCHEDULES,
    SpeedAdjustedGap,
    smallest_budget_reaching,
    variant,
)

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "docs/results/unfreezing"
LABELS = {
    "full_finetune": "plain full fine-tune, one LR 1e-3 (baseline)",
    "reference": "reference three stages: head; last:2+head; all [1e-7, 1e-3]",
    "auto": "schedule: auto (the default): BN recalibrated, cached head on 10k, all groups 1e-3",
    "auto_keep": "auto with pretrained BN statistics kept",
    "auto_affine": "auto with BN affines training from the start (uncached head)",
    "auto_stlr": "auto with a slanted triangular LR in the last stage",
}


def default_out(dataset: str) -> Path:
    """The output stem of a run without --out: one per dataset, in the study's results folder."""
    return RESULTS_DIR / ("unfreezing" if dataset == "fashion" else f"unfreezing_{dataset}")


def plot(runs: list[dict[str, Any]], rows: list[dict[str, Any]], path: str, target: float, title: str) -> None:
    """One panel per budget (each run's validation curve, its test accuracy as a star) and, with two
    or more budgets, a last panel of test accuracy against budget (mean ± std over seeds): the
    time-to-accuracy view, where a schedule that reaches the target sooner crosses the line further left.
    `rows` is `summarize(runs, target)`, which the report has already computed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({r["budget_seconds"] for r in runs})
    panels = len(budgets) + (1 if len(budgets) > 1 else 0)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.2), squeeze=False)
    names = [row["variant"] for row in rows if row["budget_seconds"] == budgets[0]]
    names += sorted({variant(r) for r in runs} - set(names))
    colours = dict(zip(names, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3, strict=False))
    legend_size = 6 if len(names) > 3 else 8
    lows = [acc for r in runs for _, acc in r["curve"]] + [r["test_accuracy"] for r in runs]
    curve_range = (max(min(lows) - 0.01, target - 0.1), 1.0 if target > 0.95 else target + 0.03)
    for ax, budget in zip(axes[0][: len(budgets)], budgets, strict=True):
        for schedule in names:
            mine = [r for r in runs if variant(r) == schedule and r["budget_seconds"] == budget]
            for k, run in enumerate(mine):
                t, acc = zip(*run["curve"], strict=True) if run["curve"] else ((), ())
                ax.plot(
                    t, acc, marker="o", ms=3, color=colours[schedule], alpha=0.8, label=schedule if k == 0 else None
                )
                ax.scatter(
                    [run["train_wall_seconds"]], [run["test_accuracy"]], marker="*", s=80, color=colours[schedule]
                )
        ax.axhline(target, color="grey", lw=0.8, ls="--")
        ax.set_title(f"budget {budget:.0f} s")
        ax.set_xlabel("seconds since training started")
        ax.set_ylim(*curve_range)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=legend_size)
    if len(budgets) > 1:
        ax = axes[0][-1]
        for name in names:
            mine = [row for row in rows if row["variant"] == name]
            ax.errorbar(
                [row["budget_seconds"] for row in mine],
                [row["mean"] for row in mine],
                yerr=[row["std"] for row in mine],
                marker="*",
                ms=8,
                capsize=3,
                color=colours[name],
                label=name,
            )
        ax.axhline(target, color="grey", lw=0.8, ls="--")
        # Its own y range: the means differ by tenths of a point, which the curves' range would flatten.
        spans = [row["mean"] - row["std"] for row in rows] + [row["mean"] + row["std"] for row in rows] + [target]
        ax.set_ylim(min(spans) - 0.002, max(spans) + 0.002)
        ax.set_ylabel("test accuracy")
        ax.set_title("test accuracy vs budget (mean ± std over seeds)")
        ax.set_xlabel("training budget, seconds")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=legend_size)
    axes[0][0].set_ylabel("validation accuracy (lines), test accuracy (stars)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _seconds_or_never(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f} s"


def verdicts(rows: list[dict[str, Any]], gaps: dict[float, SpeedAdjustedGap], target: float) -> list[str]:
    lines = []
    for budget in sorted({r["budget_seconds"] for r in rows}):
        at = {r["variant"]: r for r in rows if r["budget_seconds"] == budget}
        if DEFAULT not in at or BASELINE not in at:
            continue
        a, b = at[DEFAULT], at[BASELINE]
        diff = (a["mean"] - b["mean"]) * 100
        word = "matches or beats" if diff >= 0 else "trails"
        lines.append(
            f"- {budget:.0f} s: {DEFAULT} {word} {BASELINE}: {a['mean']:.4f} vs {b['mean']:.4f} ({diff:+.2f} pt; "
            f"seeds {a['seeds']} vs {b['seeds']}; spreads ±{a['std'] * 100:.2f} / ±{b['std'] * 100:.2f} pt)."
        )
        reach = [
            f"{name} {_seconds_or_never(r['seconds_to_target_mean'])} "
            f"({r['reached_target_runs']}/{len(r['seeds'])} runs)"
            for name, r in ((DEFAULT, a), (BASELINE, b))
        ]
        lines.append(f"  Time to the validation target: {reach[0]}, {reach[1]}.")
        if budget in gaps:
            gap = gaps[budget]
            lines.append(
                f"  At equal VM speed (fit over {gap.runs} runs, accuracy against the last stage's ms/step, "
                f"which moved it {gap.pt_per_10ms:+.2f} pt per +10 ms): {DEFAULT} - {BASELINE} "
                f"= {gap.gap_pt:+.2f} ± {gap.stderr_pt:.2f} pt (± one standard error)."
            )
    smallest = {name: smallest_budget_reaching(rows, name, target) for name in (DEFAULT, BASELINE)}
    if all(name in {r["variant"] for r in rows} for name in smallest):
        tried = {
            name: ", ".join(f"{r['budget_seconds']:.0f}" for r in rows if r["variant"] == name) for name in smallest
        }
        lines.append(
            f"- Time to accuracy (the smallest budget tried whose every seed reaches {target} on the test set, "
            f"as DAWNBench times a run to a target): {DEFAULT} {_seconds_or_never(smallest[DEFAULT])} "
            f"(budgets tried: {tried[DEFAULT]} s), {BASELINE} {_seconds_or_never(smallest[BASELINE])} "
            f"(budgets tried: {tried[BASELINE]} s)."
        )
    return lines


def describe(row: dict[str, Any]) -> str:
    if row["variant"] == row["schedule"]:
        return LABELS[row["schedule"]]
    return f"{row['schedule']} with the overrides named beside it"


def reproduce_commands(runs: list[dict[str, Any]], out: str) -> list[str]:
    """One grid command per (budget, overrides) group of the recorded runs."""
    groups: dict[tuple[float, tuple[str, ...]], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["budget_seconds"], tuple(run.get("overrides") or [])), []).append(run)
    lines = []
    for (budget, overrides), mine in sorted(groups.items()):
        seeds = ",".join(str(s) for s in sorted({r["seed"] for r in mine}))
        schedules = ",".join(s for s in SCHEDULES if any(r["schedule"] == s for r in mine))
        sets = "".join(f" --set {shlex.quote(o)}" for o in overrides)
        if Path(out) != default_out(mine[0]["dataset"]):
            sets += f" --out {Path(out).relative_to(REPO) if Path(out).is_relative_to(REPO) else out}"
        lines.append(
            f"    .venv/bin/python benchmarks/unfreezing.py --dataset {mine[0]['dataset']} --budgets {budget:.0f} "
            f"--seeds {seeds} --schedules {schedules}{sets}"
        )
    return lines


OVERRUN_TOLERANCE = 0.05


def measured_on(runs: list[dict[str, Any]]) -> str:
    """The CPUs the runs were measured on, with run counts (a wall-clock budget buys a different number
    of steps on each, so rows compare only within one CPU)."""
    counts = Counter(str(run.get("machine", "CPU not recorded (runs before it was)")) for run in runs)
    return "; ".join(f"{name} ({count} runs)" for name, count in counts.most_common())


def overran_budget(row: dict[str, Any]) -> bool:
    return bool(row["budget_clock_seconds_mean"] > row["budget_seconds"] * (1 + OVERRUN_TOLERANCE))


def write_report(
    rows: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    gaps: dict[float, SpeedAdjustedGap],
    args: argparse.Namespace,
    command: str,
) -> None:
    png = Path(f"{args.out}.png")
    plot(
        runs,
        rows,
        str(png),
        args.target,
        f"{args.dataset}: accuracy vs wall time, EfficientNet-Lite0 at {args.input_size} px",
    )
    test_samples = runs[0]["test_samples"] if runs else 0
    lines = [
        f"# Staged vs plain fine-tuning at equal wall-clock budgets ({args.dataset}, EfficientNet-Lite0)",
        "",
        "Reproduce (each command appends its runs to "
        f"`{Path(args.runs).name}` and skips runs already there; this report: `{command}`):",
        "",
        *reproduce_commands(runs, args.out),
        "",
        f"Runs measured on: {measured_on(runs)}; torch threads {args.threads or os.cpu_count()}, Python "
        f"{platform.python_version()}, no GPU. Input {args.input_size} px, "
        f"batch {args.batch_size}, AdamW (weight decay 0.05), label smoothing 0.1, hflip 0.5; test set "
        f"{test_samples} images; each run's best validation epoch is tested. A budget is "
        "`training.budget_seconds`: the wall clock from the first training step (BN re-estimation and "
        "feature caching included), not model building or the test.",
        "",
        "| budget | schedule | what | seeds | test accuracy mean ± std | min..max | training wall s | "
        f"s to val ≥ {args.target} |",
        "| ---: | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        reach = "never" if r["seconds_to_target_mean"] is None else f"{r['seconds_to_target_mean']:.0f}"
        overran = "†" if overran_budget(r) else ""
        lines.append(
            f"| {r['budget_seconds']:.0f} | {r['variant']} | {describe(r)} | {len(r['seeds'])} | "
            f"{r['mean']:.4f} ± {r['std']:.4f} | {r['min']:.4f}..{r['max']:.4f} | "
            f"{r['train_wall_seconds_mean']:.0f}{overran} | {reach} ({r['reached_target_runs']}/{len(r['seeds'])}) |"
        )
    if any(overran_budget(r) for r in rows):
        lines += [
            "",
            f"† the budget clock ran more than {OVERRUN_TOLERANCE:.0%} past the budget on average: runs measured "
            "before budget-sized stages re-planned inside an epoch (commit b5cdeda), when a stage of one or "
            "two epochs kept its 8-step probe's estimate to the end. Compare such rows with care.",
        ]
    lines += [
        "",
        "## Verdict",
        "",
        *(verdicts(rows, gaps, args.target) or ["- (no run of both the default and the baseline yet)"]),
    ]
    lines += ["", f"![accuracy vs wall time]({png.name})", "", "## Per stage (mean over seeds)", ""]
    lines += [
        "| budget | schedule | stage | steps | seconds | best val accuracy |",
        "| ---: | --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        for s in r["stages"]:
            lines.append(
                f"| {r['budget_seconds']:.0f} | {r['variant']} | {s['stage']} | {s['steps']:.0f} | "
                f"{s['seconds']:.0f} | {s['best_val_accuracy']:.4f} |"
            )
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
