"""Statistics over benchmarks/unfreezing.py's recorded runs: per-(budget, variant) summaries, time to
the target, and the default's gap to the baseline at equal machine speed (a least-squares fit)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np

SCHEDULES = ("full_finetune", "reference", "auto", "auto_keep", "auto_affine", "auto_stlr")
BASELINE = "full_finetune"
DEFAULT = "auto"


def first_reach(curve: list[list[float]], target: float) -> float | None:
    return next((t for t, acc in curve if acc >= target), None)


def variant(run: dict[str, Any]) -> str:
    """A run's schedule, with its --set overrides when it has any (exploration runs)."""
    overrides = run.get("overrides") or []
    return run["schedule"] + (" " + " ".join(overrides) if overrides else "")


def summarize(runs: list[dict[str, Any]], target: float) -> list[dict[str, Any]]:
    rows = []
    order = {name: index for index, name in enumerate(SCHEDULES)}
    variants = sorted({variant(r) for r in runs}, key=lambda v: (order[v.split(" ")[0]], v))
    for budget in sorted({r["budget_seconds"] for r in runs}):
        for name in variants:
            mine = [r for r in runs if variant(r) == name and r["budget_seconds"] == budget]
            if not mine:
                continue
            accs = [r["test_accuracy"] for r in mine]
            reach = [first_reach(r["curve"], target) for r in mine]
            reached = [t for t in reach if t is not None]
            rows.append(
                {
                    "budget_seconds": budget,
                    "schedule": mine[0]["schedule"],
                    "variant": name,
                    "seeds": sorted(r["seed"] for r in mine),
                    "mean": statistics.fmean(accs),
                    "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                    "min": min(accs),
                    "max": max(accs),
                    "train_wall_seconds_mean": statistics.fmean(r["train_wall_seconds"] for r in mine),
                    "budget_clock_seconds_mean": statistics.fmean(r["train_seconds"] for r in mine),
                    "reached_target_runs": len(reached),
                    "seconds_to_target_mean": statistics.fmean(reached) if reached else None,
                    "stages": [
                        {
                            "stage": s["stage"],
                            "seconds": statistics.fmean(r["stages"][i]["seconds"] for r in mine),
                            "steps": statistics.fmean(r["stages"][i].get("steps", 0.0) for r in mine),
                            "best_val_accuracy": statistics.fmean(r["stages"][i]["best_val_accuracy"] for r in mine),
                        }
                        for i, s in enumerate(mine[0]["stages"])
                    ],
                }
            )
    return rows


def ms_per_step(run: dict[str, Any]) -> float:
    """The run's last stage's milliseconds per step: how fast the VM ran it (the stage every schedule
    has, all groups training; a cached head stage's steps are not comparable)."""
    last = run["stages"][-1]
    return 1000.0 * float(last["seconds"]) / max(float(last.get("steps", 0.0)), 1.0)


@dataclass(frozen=True)
class SpeedAdjustedGap:
    """The default's test accuracy minus the baseline's at one budget, at equal machine speed."""

    gap_pt: float
    stderr_pt: float  # one standard error of gap_pt
    pt_per_10ms: float  # how accuracy moved with the last stage's step time
    runs: int


def speed_adjusted_gap(runs: list[dict[str, Any]], budget: float) -> SpeedAdjustedGap | None:
    """The default's test accuracy minus the baseline's at `budget`, at equal machine speed.

    A shared VM's speed drifts by up to 20% from run to run, and a run's accuracy follows the steps
    its budget bought, so the raw gap between two handfuls of runs is mostly the VM. A least-squares
    fit, accuracy ~ 1 + ms/step + [run is the default], over both schedules' runs takes the speed
    out: the indicator's coefficient is the gap at equal speed. The head stage's cost stays in it
    (ms/step is the last stage's, not the run's steps). None with fewer than two runs of each or
    five in all (the fit has three parameters and needs two degrees of freedom for its error).
    """
    mine = [r for r in runs if r["budget_seconds"] == budget and variant(r) in (DEFAULT, BASELINE)]
    is_default = np.array([variant(r) == DEFAULT for r in mine], dtype=float)
    if min(is_default.sum(), len(mine) - is_default.sum()) < 2 or len(mine) < 5:
        return None
    design = np.column_stack([np.ones(len(mine)), [ms_per_step(r) for r in mine], is_default])
    accuracy = np.array([r["test_accuracy"] for r in mine])
    coefficients, *_ = np.linalg.lstsq(design, accuracy, rcond=None)
    residuals = accuracy - design @ coefficients
    variance = float(residuals @ residuals) / (len(mine) - design.shape[1])
    covariance = variance * np.linalg.pinv(design.T @ design)
    return SpeedAdjustedGap(
        gap_pt=float(coefficients[2]) * 100,
        stderr_pt=float(np.sqrt(covariance[2, 2])) * 100,
        pt_per_10ms=float(coefficients[1]) * 1000,
        runs=len(mine),
    )


def speed_adjusted_gaps(runs: list[dict[str, Any]]) -> dict[float, SpeedAdjustedGap]:
    """speed_adjusted_gap at every budget where it can be fitted."""
    gaps = {budget: speed_adjusted_gap(runs, budget) for budget in sorted({r["budget_seconds"] for r in runs})}
    return {budget: gap for budget, gap in gaps.items() if gap is not None}


def smallest_budget_reaching(rows: list[dict[str, Any]], name: str, target: float) -> float | None:
    """The smallest budget at which every run of `name` tests at or above the target: the wall clock a
    user must give training to be sure of the target (a run's in-run crossing depends on where its
    LR schedule anneals, which is the budget's end for both schedules)."""
    reached = [r["budget_seconds"] for r in rows if r["variant"] == name and r["min"] >= target]
    return min(reached) if reached else None
