"""`rooivalk search PLAN`: the plan's `search:` run on this machine (rooivalk.search)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rooivalk.cli.common import PlanArg, SetOpt, print_error, stdout_console
from rooivalk.plan import PlanError


def search(
    plan: PlanArg,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Search folder; default runs/<plan>-search.")] = None,
    trials: Annotated[int | None, typer.Option(help="Trials in all; default search.trials.", min=1)] = None,
    workers: Annotated[int | None, typer.Option(help="Parallel trials; default search.workers.", min=1)] = None,
) -> None:
    """Run the plan's `search:` (an Optuna study over plan keys): every trial trained and tracked, then
    search.json, best_plan.yaml and search.png in the search folder."""
    import logging

    from rooivalk.plan import apply_overrides, read_plan_file
    from rooivalk.search import run_search

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        raw = apply_overrides(read_plan_file(plan), set_ or [])
        out_dir = out or Path("runs") / f"{raw.get('name', 'plan')}-search"
        report = run_search(raw, str(plan), out_dir, trials, workers, say=stdout_console().print)
    except PlanError as error:
        print_error(str(error))
        raise typer.Exit(2) from None
    table = Table(title=f"study {report.study}: {report.metric} ({report.direction})")
    for column in ("trial", "state", report.metric, "parameters", "seconds"):
        table.add_column(column)
    for trial in report.trials:
        value = "" if trial["value"] is None else f"{trial['value']:.4g}"
        params = ", ".join(f"{k}={v!r}" for k, v in trial["params"].items())
        table.add_row(str(trial["number"]), trial["state"], value, params, f"{trial['seconds'] or 0:.0f}")
    stdout_console().print(table)
    if report.best is None:
        print_error(f"no trial completed ({report.counts()}): see {out_dir / 'search.json'}")
        raise typer.Exit(1)
    stdout_console().print(
        f"best: trial {report.best['number']}, {report.metric} {report.best['value']:.4g}; "
        f"plan {out_dir / 'best_plan.yaml'}; plot {out_dir / 'search.png'}"
    )
