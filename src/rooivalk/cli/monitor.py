"""`rooivalk drift` (one batch check) and `rooivalk monitor serve` (the monitor service)."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from rooivalk.plan import MonitoringSpec

monitor_app = typer.Typer(help="Drift monitoring service.", no_args_is_help=True)

PlanOpt = Annotated[Path | None, typer.Option("--plan", help="Plan YAML whose `monitoring` section applies.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a plan key: key.path=value (repeatable).")]


def _spec(plan: Path | None, overrides: list[str] | None) -> tuple[MonitoringSpec, str | None]:
    from rooivalk.cli.common import load_cli_plan

    if plan is None:
        return MonitoringSpec(), None
    loaded = load_cli_plan(plan, overrides)
    return loaded.monitoring, loaded.tracking.registered_model or loaded.name


def _fail(message: str, code: int = 2) -> typer.Exit:
    from rooivalk.cli.common import print_error

    print_error(message)
    return typer.Exit(code)


def drift(
    current: Annotated[str, typer.Option("--current", help="Production data: .parquet/.csv/.jsonl or a profile.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Folder or s3:// prefix for the report + drift.json.")],
    reference: Annotated[
        str | None,
        typer.Option("--reference", help="Reference profile (default: the plan's monitoring.reference_uri)."),
    ] = None,
    plan: PlanOpt = None,
    set_: SetOpt = None,
) -> None:
    """Check production data for drift against the training pipeline's reference profile: per-column
    drift (Evidently picks the test by column type and size), drift share, prediction and embedding
    drift. Exit code 0: no retraining needed, 3: drift (retrain), 2: bad input."""
    from rooivalk import storage
    from rooivalk.evaluation.profile import BadBatch
    from rooivalk.monitoring.drift import DRIFT_JSON, REPORT_HTML, reference_for, run_drift_check

    spec, _ = _spec(plan, set_)
    try:
        result = run_drift_check(spec, reference_for(spec, reference, "--reference"), current, out)
    except (BadBatch, ValueError, storage.StorageError) as error:
        raise _fail(str(error)) from None
    console = Console(file=sys.stdout)
    table = Table("column", "drifted", "score", "method", "threshold", title="drift per column")
    for name, column in sorted(result.columns.items(), key=lambda item: not item[1].drifted):
        flag = "[red]yes[/]" if column.drifted else "no"
        table.add_row(name, flag, f"{column.score:.4g}", column.method, f"{column.threshold:g}")
    console.print(table)
    colour = "red" if result.retrain else "green"
    console.print(f"[{colour}]{'retrain' if result.retrain else 'no retraining'}[/]: {result.reason}")
    console.print(f"wrote {out}/{REPORT_HTML} and {out}/{DRIFT_JSON}")
    raise typer.Exit(3 if result.retrain else 0)


@monitor_app.command("serve")
def serve(
    plan: PlanOpt = None,
    set_: SetOpt = None,
    reference: Annotated[
        str | None, typer.Option(help="Reference profile (default: monitoring.reference_uri).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 in a pod).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for /batches, /metrics and /healthz.")] = 8000,
    model: Annotated[str | None, typer.Option(help="The `model` label (default: the plan's registry name).")] = None,
) -> None:
    """Accept production batches (POST /batches), keep a sliding window, check it for drift on a
    schedule, expose Prometheus metrics at /metrics, and POST a retraining event on drift."""
    from rooivalk import storage
    from rooivalk.evaluation.profile import BadBatch, load_profile
    from rooivalk.monitoring.drift import reference_for
    from rooivalk.monitoring.service import DriftMonitor
    from rooivalk.monitoring.service import serve as run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec, plan_model = _spec(plan, set_)
    try:
        reference = reference_for(spec, reference, "--reference")
        frame, info = load_profile(reference)
        monitor = DriftMonitor(spec, frame, info, model or plan_model or info.model, reference_uri=reference)
    except (BadBatch, ValueError, storage.StorageError) as error:
        raise _fail(str(error)) from None

    def stop(_signum: int, _frame: Any) -> None:
        raise SystemExit(0)  # unwinds serve_forever, so the window is saved on the way out

    signal.signal(signal.SIGTERM, stop)
    Console(file=sys.stdout).print(
        f"monitoring {monitor.model} (reference {reference}, {info.rows} rows) on http://{host}:{port}: "
        "POST /batches, GET /metrics, GET /healthz"
    )
    with contextlib.suppress(KeyboardInterrupt):
        run(monitor, host, port)
