"""What a search leaves behind: search.json, best_plan.yaml and search.png.

search.json lists every trial of the study (number, state, value, parameters, seconds, the refusal of
a failed one) and the best; best_plan.yaml is the searched plan with the best trial's values and without
its search section, so `rooivalk run best_plan.yaml` trains it as is; search.png plots the objective by
trial (complete, pruned at its last reported figure, the best so far) beside Optuna's parameter
importance (fANOVA; drawn once two trials are complete).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rooivalk.plan import SearchSpec
from rooivalk.search.trials import trial_raw_plan

REPORT_FILE = "search.json"
BEST_PLAN_FILE = "best_plan.yaml"
PLOT_FILE = "search.png"


@dataclass
class SearchReport:
    study: str
    metric: str
    direction: str
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    out_dir: Path
    importance: dict[str, float] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        states = [trial["state"] for trial in self.trials]
        return {state: states.count(state) for state in sorted(set(states))}

    def files(self) -> list[Path]:
        names = [REPORT_FILE, PLOT_FILE] + ([BEST_PLAN_FILE] if self.best is not None else [])
        return [self.out_dir / name for name in names]

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "objective": {"metric": self.metric, "direction": self.direction},
            "counts": self.counts(),
            "best": self.best,
            "importance": self.importance,
            "trials": self.trials,
        }


def _trial_record(trial: Any) -> dict[str, Any]:
    intermediate = dict(sorted(trial.intermediate_values.items()))
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "value": trial.value,
        "params": trial.params,
        "epochs": len(intermediate),
        "last_reported": list(intermediate.values())[-1] if intermediate else None,
        "seconds": trial.user_attrs.get("seconds"),
        "error": trial.user_attrs.get("error"),
    }


def _importance(study: Any) -> dict[str, float]:
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2 or len({json.dumps(t.params, sort_keys=True) for t in complete}) < 2:
        return {}
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):  # e.g. every complete trial scored the same
        return {}


def _plot(report: SearchReport, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11.0, 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    trials_axes, importance_axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    complete = [t for t in report.trials if t["state"] == "complete"]
    pruned = [t for t in report.trials if t["state"] == "pruned" and t["last_reported"] is not None]
    trials_axes.scatter([t["number"] for t in complete], [t["value"] for t in complete], label="complete")
    trials_axes.scatter(
        [t["number"] for t in pruned], [t["last_reported"] for t in pruned], marker="x", color="grey", label="pruned"
    )
    best, xs, ys = None, [], []
    better = max if report.direction == "maximize" else min
    for trial in sorted(complete, key=lambda t: t["number"]):
        best = trial["value"] if best is None else better(best, trial["value"])
        xs.append(trial["number"])
        ys.append(best)
    if xs:
        trials_axes.step(xs, ys, where="post", color="tab:green", label="best so far")
    trials_axes.set(xlabel="trial", ylabel=report.metric, title=f"{report.study}: {report.metric} by trial")
    trials_axes.legend(loc="best")
    names = list(report.importance)
    importance_axes.barh(names[::-1], [report.importance[n] for n in names][::-1])
    importance_axes.set(xlabel="importance (fANOVA)", title="parameter importance")
    if not names:
        importance_axes.text(0.5, 0.5, "needs two complete trials", ha="center", va="center")
    figure.savefig(path)


def write_report(study: Any, spec: SearchSpec, raw: dict[str, Any], out_dir: Path) -> SearchReport:
    """search.json, best_plan.yaml (when a trial completed) and search.png in `out_dir`."""
    import optuna

    trials = [_trial_record(trial) for trial in sorted(study.trials, key=lambda t: t.number)]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = None
    if complete:
        top = study.best_trial
        best = {"number": top.number, "value": top.value, "params": top.params, "plan": BEST_PLAN_FILE}
        header = (
            f"# Written by `rooivalk search`: trial {top.number} of study {study.study_name!r}, "
            f"{spec.objective.name} {top.value:.6g}.\n"
        )
        text = yaml.safe_dump(trial_raw_plan(raw, top.params), sort_keys=False)
        (out_dir / BEST_PLAN_FILE).write_text(header + text)
    report = SearchReport(
        study.study_name, spec.objective.name, spec.objective.resolved_direction, trials, best, out_dir
    )
    report.importance = _importance(study)
    (out_dir / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2))
    _plot(report, out_dir / PLOT_FILE)
    return report
