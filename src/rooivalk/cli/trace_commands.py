"""`rooivalk trace model|dataset|requirement`: traceability lookups both ways (rooivalk.tracking.trace),
tables for people, `--json` for tools. Something not found is one line on stderr and exit 2."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from rooivalk.cli.common import print_error, stdout_console
from rooivalk.cli.lifecycle_commands import NameArg, TrackingOpt, VersionArg, registry_client

trace_app = typer.Typer(
    help="Traceability: a model version to its data, plan and requirements, and back.", no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the lookup as JSON (docs/tracking.md#traceability).")]


def _lookup(tracking_uri: str | None, query: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Run a lookup on the store; TraceError -> one line, exit 2."""
    from rooivalk.tracking.trace import TraceError

    client = registry_client(tracking_uri)
    try:
        return query(client)
    except TraceError as error:
        print_error(str(error))
        raise typer.Exit(2) from None


def _emit_json(result: dict[str, Any]) -> None:
    # echo, not print_json: tools parse it, and rich would re-indent and colour it.
    typer.echo(json.dumps(result, indent=2))


def _table(title: str, header: list[str], rows: list[list[Any]]) -> Table:
    """Cells as text: ids, URIs and class names are data that may hold brackets (never markup)."""
    table = Table(title=title, title_justify="left", highlight=False)
    for column in header:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text("-" if cell is None else str(cell)) for cell in row))
    return table


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _criterion(requirement: dict[str, Any]) -> str:
    if requirement.get("metric") is None:
        return "-"
    what = requirement["metric"] + (f"[{requirement['class_name']}]" if requirement.get("class_name") else "")
    bounds = [f">= {requirement['min']:g}" if requirement.get("min") is not None else "",
              f"<= {requirement['max']:g}" if requirement.get("max") is not None else ""]  # fmt: skip
    return " ".join([what, " and ".join(b for b in bounds if b)])


def _print_card(console: Console, card: dict[str, Any] | None) -> None:
    from rooivalk.data.dataset_card_markdown import counts_rows
    from rooivalk.data.dataset_card_schema import Counts

    if card is None:
        console.print(Text("dataset card: none in the ingest run (ingested before cards, or not by an ingest step)"))
        return
    for source in card.get("sources") or []:
        named = source["uri"] if source["name"] == source["uri"] else f"{source['name']}: {source['uri']}"
        console.print(Text(f"source {named} (reader {source.get('reader') or '?'})"))
    if card.get("simulated") is not None:
        console.print(Text(f"simulated: {json.dumps(card['simulated'], sort_keys=True)}"))
    if card.get("counts") is not None:
        counts = Counts.model_validate(card["counts"])
        console.print(_table(f"{counts.unit} per class and split", *counts_rows(counts)))
    console.print(Text(f"quarantined {card.get('quarantined')}; manifest sha256 {card.get('manifest_digest')}"))


@trace_app.command("model")
def trace_model(name: NameArg, version: VersionArg, as_json: JsonOpt = False, tracking_uri: TrackingOpt = None) -> None:
    """A model version down to its dataset (sources, counts), requirements (measured values, verdicts), plan
    digest, commit, packages, previous version and approvals."""
    from rooivalk.tracking.trace import trace_model as lookup

    found = _lookup(tracking_uri, lambda client: lookup(client, name, version))
    if as_json:
        _emit_json(found)
        return
    console = stdout_console()
    approval = found["approval"]
    dataset = found["dataset"]
    lines = [
        f"status {found['status']}" + (f" (aliases {', '.join(found['aliases'])})" if found["aliases"] else ""),
        "approved: "
        + ("no" if approval is None else f"by {approval['by']} at {approval['at']}")
        + (f" ({approval['note']})" if approval and approval["note"] else ""),
        f"architecture {found['architecture']}; previous version {found['previous_version'] or 'none'}",
        f"plan {found['plan_name']} digest {found['plan_digest']}; git commit {found['git_commit']}",
        "packages " + ", ".join(f"{k} {v}" for k, v in found["packages"].items()),
        f"dataset {dataset['version']} (" + ", ".join(f"{s} {n}" for s, n in dataset["samples"].items()) + ")"
        f"; ingest run {dataset['ingest_run_id'] or '-'}",
        *(
            f"training {step}: {t.get('epochs')} epochs, best {_whole(t.get('best_epoch'))}, "
            f"{_seconds(t.get('seconds'))}, GPU {t.get('gpu')}"
            for step, t in found["training"].items()
        ),
        f"pipeline run {found['runs'].get('pipeline')}; record {found['record']}",
    ]
    if found["promotion"] is not None:
        lines.append(f"promotion: {found['promotion']['reason']}")
    console.print(Text.assemble((f"{found['name']} version {found['version']}", "bold"), "\n", "\n".join(lines)))
    rows = [[r["id"], r["text"], _criterion(r), _value(r["value"]), r["verdict"]] for r in found["requirements"]]
    console.print(_table("requirements", ["id", "text", "criterion", "measured", "verdict"], rows))
    _print_card(console, dataset["card"])
    history = [[h["status"], h["at"], h["by"], h.get("note", "")] for h in found["status_history"]]
    console.print(_table("status history", ["status", "at", "by", "note"], history))


@trace_app.command("dataset")
def trace_dataset(
    dataset_version: Annotated[str, typer.Argument(help="Dataset version id (as the ingest step made it).")],
    as_json: JsonOpt = False,
    tracking_uri: TrackingOpt = None,
) -> None:
    """A dataset version up to every pipeline run and step run trained or evaluated on it, the model
    versions registered on it and the champions re-scored on it."""
    from rooivalk.tracking.trace import trace_dataset as lookup

    found = _lookup(tracking_uri, lambda client: lookup(client, dataset_version))
    if as_json:
        _emit_json(found)
        return
    console = stdout_console()
    console.print(Text(found["dataset_version"], style="bold"))
    _print_card(console, found["card"])
    runs = [
        [r["run_id"], r["pipeline"], r["status"], r["started"], ", ".join(s["step"] for s in r["steps"])]
        for r in found["pipeline_runs"]
    ]
    console.print(_table("pipeline runs on it", ["run", "pipeline", "status", "started", "steps"], runs))
    versions = [
        [v["name"], v["version"], v["status"], ", ".join(v["aliases"]), v["pipeline_run_id"]]
        for v in found["model_versions"]
    ]
    console.print(_table("model versions trained on it", ["model", "version", "status", "aliases", "run"], versions))
    rescored = [
        [r["name"], r["version"], f"{r['metric']} {_value(r['score'])}", r["challenger_version"], r["promoted"]]
        for r in found["rescored"]
    ]
    header = ["model", "version", "score", "challenger", "promoted"]
    console.print(_table("champions re-scored on it", header, rescored))


@trace_app.command("requirement")
def trace_requirement(
    requirement_id: Annotated[str, typer.Argument(help="Requirement id, as the plan's requirements list it.")],
    model: Annotated[str | None, typer.Option("--model", help="Only this registered model's versions.")] = None,
    as_json: JsonOpt = False,
    tracking_uri: TrackingOpt = None,
) -> None:
    """A requirement up to every registered model version that carries it, with its measured value."""
    from rooivalk.tracking.trace import trace_requirement as lookup

    found = _lookup(tracking_uri, lambda client: lookup(client, requirement_id, model))
    if as_json:
        _emit_json(found)
        return
    console = stdout_console()
    requirement = found["requirement"]
    console.print(
        Text.assemble(
            (requirement["id"], "bold"),
            f": {requirement['text'] or '-'} ({_criterion(requirement)}, as {requirement['stated_by']} states it)",
        )
    )
    rows = [
        [v["name"], v["version"], _value(v["value"]), v["verdict"], v["status"], v["dataset_version"]]
        for v in found["versions"]
    ]
    console.print(_table("model versions", ["model", "version", "measured", "verdict", "status", "dataset"], rows))


def _whole(value: Any) -> str:
    return str(int(value)) if isinstance(value, int | float) else "-"


def _seconds(value: Any) -> str:
    return f"{value:.1f} s" if isinstance(value, int | float) else "- s"
