"""`rooivalk report`: a run's report, Markdown (tables and its figures as PNG files beside it) or one
self-contained HTML file (rooivalk.cli.report_html)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rooivalk.cli.common import print_error, stdout_console


def report(
    run: Annotated[Path, typer.Argument(help="A run folder (or its summary.json).")],
    output: Annotated[
        Path | None,
        typer.Option("--out", "--output", "-o", help="File to write; default <run folder>/report.md or report.html."),
    ] = None,
    html: Annotated[
        bool,
        typer.Option(
            "--html",
            help="Write one self-contained HTML file (figures inline as PNGs: training curves with stages and LR, "
            "confusion matrix, per-class metrics, reliability, degraded mode; tables of lineage, export variants, "
            "requirements and gates) instead of Markdown.",
        ),
    ] = False,
    figures: Annotated[
        bool,
        typer.Option(
            help="Markdown only: write the figures as PNGs in <out stem>_figures/ and link them (for a run folder; "
            "a summary .json kept elsewhere gives the tables only)."
        ),
    ] = True,
    command: Annotated[str, typer.Option(help="The command that reproduces the run.")] = "make demo",
) -> None:
    """Render a run's report. Markdown by default (stages, test metrics, export, gates from summary.json, and
    its figures as PNG files beside it); --html writes one self-contained HTML file with every figure inline."""
    from rooivalk import storage
    from rooivalk.cli.report import render_report

    if html and not figures:
        print_error("--no-figures applies to the Markdown report; the HTML report holds its figures inline")
        raise typer.Exit(2)

    run_dir = run.parent if run.name.endswith(".json") else run
    summary = run_dir / "summary.json" if run_dir == run else run
    try:
        data = json.loads(summary.read_text())
        if html:
            from rooivalk.cli.report_html import write_html_report

            written = write_html_report(run_dir, output, summary_path=summary)
        else:
            written = output or run_dir / "report.md"
            text = render_report(data, command)
            if figures and summary.name == "summary.json":
                from rooivalk.cli.report_html import markdown_figures

                text = "\n".join(filter(None, [text, markdown_figures(run_dir, written, summary_path=summary)]))
            storage.write_text(written, text)
    except (OSError, ValueError) as error:  # json.JSONDecodeError is a ValueError too
        print_error(f"{summary}: {error}")
        raise typer.Exit(2) from None
    stdout_console().print(f"[green]wrote[/] {written}")
