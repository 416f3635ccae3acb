"""What the CLI's commands share: the consoles, plan loading with errors that name the file and key
path, and the cluster's tracking URI. Commands in their own modules (monitor, submit) import it
instead of the app module, which imports them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from rooivalk.plan import Plan, PlanError, load_plan


def stdout_console() -> Console:
    # Bound per call, not at import: the CLI test runner swaps sys.stdout, and `run` must keep the
    # real terminal while kfp.local's output is redirected to the run's log.
    return Console(file=sys.stdout, log_path=False)


# The in-cluster MLflow service the Helm chart deploys; local runs default to sqlite instead.
CLUSTER_TRACKING_URI = "http://rooivalk-mlflow:5000"

PlanArg = Annotated[Path, typer.Argument(help="Plan YAML file.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a plan key: key.path=value (repeatable).")]


def plugin_task_info(family: str) -> tuple[str, bool]:
    """Plugin families' tasks for the plan check (imports torch, only for a plan with a plugin family)."""
    from rooivalk.training.tasks import plugin_task_info as task_info

    return task_info(family)


def load_cli_plan(plan_path: Path, overrides: list[str] | None, check_model: bool = False) -> Plan:
    """Load and validate; with check_model, also resolve the stages on the plan's model."""
    try:
        plan = load_plan(plan_path, overrides or [], resolver=plugin_task_info)
        if check_model:
            from rooivalk.training.trainer import check_stages_against_model

            check_stages_against_model(plan)
        return plan
    except (PlanError, ValueError) as error:
        print_error(str(error) if isinstance(error, PlanError) else f"{plan_path}: {error}")
        raise typer.Exit(2) from None


def _print_line(label: str, style: str, message: str) -> None:
    # Text, not markup: messages hold key paths like stages[head] that markup would eat.
    # No wrapping: off a terminal rich wraps at 80 columns, which splits the paths and URIs errors name
    # (pod logs, CI, grep).
    Console(file=sys.stderr).print(Text.assemble((label, style), " ", message), highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    _print_line("error:", "bold red", message)


def print_warning(message: str) -> None:
    """One line on stderr, as print_error, for what went wrong after the command's own change was made."""
    _print_line("warning:", "bold yellow", message)
