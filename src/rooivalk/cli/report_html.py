"""The training report as files: one self-contained HTML file (figures as inline base64 PNGs, CSS inline,
no script and nothing fetched, so it opens from an e-mail or an MLflow artifact view as it is), and the
Markdown report with the same figures as PNG files in a folder beside it.

Every figure is an <img> inside a <figure data-figure="KEY"> with alt text and a caption; KEY is stable
(training-<model>, confusion-matrix, per-class, reliability, degraded-mode) so tests and readers can find it.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from rooivalk import storage
from rooivalk.cli.report_data import RunFolder, load_run_folder
from rooivalk.cli.report_parts import Figure, Section, Table
from rooivalk.cli.report_sections import build_sections

REPORT_HTML = "report.html"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.fail { color: #b00; font-weight: bold; } td.pass { color: #070; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; max-width: 900px; }
"""


def _cell(text: str) -> str:
    kind = "fail" if text == "FAIL" else "pass" if text == "pass" else ""
    if not kind and text.replace(".", "", 1).replace("-", "", 1).replace("+", "", 1).isdigit():
        kind = "num"
    return f'<td class="{kind}">{html.escape(text)}</td>' if kind else f"<td>{html.escape(text)}</td>"


def _html_table(table: Table) -> str:
    header = "" if not any(table.header) else "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    rows = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in table.rows)
    return f"<table>{header}{rows}</table>"


def _html_figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (
        f'<figure data-figure="{html.escape(figure.key)}"><img src="data:image/png;base64,{data}" '
        f'alt="{html.escape(figure.alt)}"><figcaption>{html.escape(figure.caption)}</figcaption></figure>'
    )


def render_html(folder: RunFolder, sections: list[Section]) -> str:
    body: list[str] = [f"<h1>Training report: {html.escape(str(folder.summary.get('plan')))}</h1>"]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        for part in section.parts:
            if isinstance(part, Table):
                body.append(_html_table(part))
            elif isinstance(part, Figure):
                body.append(_html_figure(part))
            else:
                body.append(f"<p>{html.escape(part)}</p>")
    title = html.escape(f"Training report: {folder.summary.get('plan')}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_html_report(
    run_dir: Path, out: Path | None = None, tracking: bool = True, summary_path: Path | None = None
) -> Path:
    """Render the run folder's report as one HTML file (default <run_dir>/report.html); returns its path."""
    folder = load_run_folder(run_dir, tracking=tracking, summary_path=summary_path)
    path = out or run_dir / REPORT_HTML
    storage.write_text(path, render_html(folder, build_sections(folder)))
    return path


def markdown_figures(run_dir: Path, out: Path, tracking: bool = True, summary_path: Path | None = None) -> str:
    """'## Figures' for the Markdown report at `out`: each figure written as <out stem>_figures/<key>.png
    beside it and linked with its caption. Empty when the run folder gives no figure."""
    folder = load_run_folder(run_dir, tracking=tracking, summary_path=summary_path)
    found = [part for section in build_sections(folder) for part in section.parts if isinstance(part, Figure)]
    if not found:
        return ""
    figure_dir = out.parent / f"{out.stem}_figures"
    lines = ["## Figures", ""]
    for figure in found:
        storage.write_bytes(figure_dir / f"{figure.key}.png", figure.png)
        lines += [f"![{figure.alt}]({figure_dir.name}/{figure.key}.png)", "", f"*{figure.caption}*", ""]
    return "\n".join(lines)
