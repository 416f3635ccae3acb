"""`rooivalk dataset card`: a dataset version's card (rooivalk.data.dataset_card), as tables or JSON."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from rooivalk.cli.common import print_error, stdout_console

dataset_app = typer.Typer(help="Ingested dataset versions.", no_args_is_help=True)


def _counts_table(title: str, header: list[str], rows: list[list[str]], total_row: bool = True) -> Table:
    """`rows` as text (class names and quarantine reasons are data, never markup); the last one in bold
    when it is the totals row."""
    table = Table(title=title, title_justify="left", highlight=False)
    for index, column in enumerate(header):
        table.add_column(column, justify="left" if index == 0 else "right", overflow="fold")
    for index, row in enumerate(rows):
        bold = total_row and index == len(rows) - 1
        table.add_row(*(Text(cell) for cell in row), style="bold" if bold else None)
    return table


def _named(name: str, uri: str) -> str:
    return uri if name == uri else f"{name}: {uri}"


@dataset_app.command()
def card(
    dataset_dir: Annotated[str, typer.Argument(help="An ingested dataset folder (or s3:// prefix).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the card as JSON (docs/tracking.md#dataset-cards).")
    ] = False,
) -> None:
    """Print a dataset version's card: sources, counts per class and split, quarantine, sha256 manifest.
    A dataset ingested before cards existed gets one built from its folder (not written)."""
    from rooivalk import storage
    from rooivalk.data.dataset_card import NotADatasetError, read_dataset_card
    from rooivalk.data.dataset_card_markdown import counts_rows

    try:
        found = read_dataset_card(dataset_dir)
    except (NotADatasetError, storage.StorageError, ValueError) as error:  # IntegrityError is a StorageError
        print_error(str(error).splitlines()[0])
        raise typer.Exit(2) from None
    console = stdout_console()
    if as_json:
        # print, not print_json: tools parse it, and rich would re-indent and colour it.
        typer.echo(json.dumps(found.model_dump(mode="json"), indent=2))
        return
    created = found.created
    lines = [
        f"{found.kind} ({found.format}), {len(found.classes)} classes; created by {created.by} at {created.at}, "
        f"rooivalk {created.rooivalk_version}, commit {created.git_commit}",
        *(f"source {_named(s.name, s.uri)} (reader {s.reader or '?'})" for s in found.sources.sources),
    ]
    if found.sources.simulated is not None:
        lines.append(f"simulated: {json.dumps(found.sources.simulated, sort_keys=True)}")
    # Text, not markup: URIs, class names and reasons are data that may hold brackets.
    console.print(Text.assemble((found.dataset_version, "bold"), " ", "\n".join(lines)))
    console.print(_counts_table(f"{found.counts.unit} per class and split", *counts_rows(found.counts)))
    if found.boxes is not None:
        console.print(_counts_table("boxes per class and split", *counts_rows(found.boxes)))
    if found.missing_modalities is not None:
        splits = list(found.counts.per_split)
        rows = [[sensor, *(str(per[s]) for s in splits)] for sensor, per in found.missing_modalities.items()]
        console.print(_counts_table("events without the sensor's sample", ["sensor", *splits], rows, total_row=False))
    quarantine = found.quarantine
    reasons = [[reason, str(count)] for reason, count in quarantine.by_reason.items()]
    title = f"quarantine: {quarantine.count} ({quarantine.file})"
    console.print(_counts_table(title, ["reason", "count"], reasons, total_row=False) if reasons else Text(title))
    manifest = found.manifest
    console.print(
        Text(
            f"manifest sha256 {manifest.digest} ({len(manifest.files)} files); {manifest.info_file} "
            f"{manifest.info_sha256}; {manifest.index_file} {manifest.index_sha256}"
        )
    )
