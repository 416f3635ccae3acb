"""The training report of a run folder: one self-contained HTML file whose every figure decodes in headless
Chromium, the Markdown report with the same figures beside it, and `rooivalk run`'s report.html logged to
the MLflow parent run. The run folders are synthetic (tests/unit/cli/report_fixture.py): no pipeline runs."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from rooivalk._dev.browser import find_chromium, rendered_figures
from rooivalk.cli import app
from rooivalk.cli.local_run import write_run_report
from rooivalk.cli.report_html import write_html_report
from tests.unit.cli.report_fixture import make_run_folder

SINGLE_FIGURES = {"training-model", "confusion-matrix", "per-class", "reliability"}
SYSTEM_FIGURES = {
    "training-optical",
    "training-radar",
    "training-fusion",
    "confusion-matrix",
    "per-class",
    "reliability",
    "degraded-mode",
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both kinds of run, each rendered once for the module (matplotlib is the slow part)."""
    root = tmp_path_factory.mktemp("reports")
    return {
        kind: write_html_report(make_run_folder(root / kind, system=kind == "system"), tracking=False)
        for kind in ("single", "system")
    }


def _figure_keys(text: str) -> list[str]:
    return re.findall(
        r'<figure data-figure="([^"]+)"><img src="data:image/png;base64,[^"]+" alt="[^"]+">'
        r"<figcaption>[^<]+</figcaption>",
        text,
    )


def test_the_html_report_is_one_file_with_every_section_figure_caption_and_alt(reports: dict[str, Path]) -> None:
    single, system = reports["single"].read_text(), reports["system"].read_text()
    assert sorted(_figure_keys(single)) == sorted(SINGLE_FIGURES)
    assert sorted(_figure_keys(system)) == sorted(SYSTEM_FIGURES)
    for text in (single, system):
        assert "<script" not in text
        assert "http://" not in text
        assert "https://" not in text
        for title in ("Run", "Lineage", "Training curves", "Test set", "Calibration", "Export variants", "Gates"):
            assert f"<h2>{title}</h2>" in text
        assert "f" * 64 in text  # the plan digest, from the reports' lineage
        assert "<td>int8_static</td>" in text
        assert "<td>yes</td>" in text
    # the requirements contract: rows from evaluation.json, or a sentence when the plan has none
    assert "<td>REQ-2</td>" in single
    assert '<td class="fail">FAIL</td>' in single
    assert "No requirements in the plan." in system
    assert "<h2>Degraded mode</h2>" in system
    assert '<td>optical</td><td class="num">0.7500</td>' in system
    assert "<h2>Degraded mode</h2>" not in single
    # the fusion's evaluation has no matrix: the validation split's, from the reference profile, says so
    assert "from the reference profile" in system


def test_every_figure_renders_in_headless_chromium(reports: dict[str, Path]) -> None:
    browser = find_chromium()
    if browser is None:
        pytest.skip("chromium is not installed (`make chromium` installs Debian's; `make test` does it first)")
    for kind, expected in (("single", SINGLE_FIGURES), ("system", SYSTEM_FIGURES)):
        rendered = rendered_figures(reports[kind], browser)
        assert set(rendered) == expected, kind
        assert all(width > 100 and height > 100 for width, height in rendered.values()), rendered


def test_report_command_writes_markdown_with_figures_or_html(tmp_path: Path) -> None:
    run_dir = make_run_folder(tmp_path / "run")
    markdown = CliRunner().invoke(app, ["report", str(run_dir), "--command", "make demo"])
    assert markdown.exit_code == 0, markdown.output
    text = (run_dir / "report.md").read_text()
    assert "Reproduce: `make demo`" in text  # the existing Markdown report, then its figures
    linked = re.findall(r"!\[[^]]+\]\((report_figures/[^)]+\.png)\)", text)
    assert {Path(link).stem for link in linked} == SINGLE_FIGURES
    assert all((run_dir / link).stat().st_size > 1000 for link in linked)
    out = tmp_path / "elsewhere" / "r.html"
    html = CliRunner().invoke(app, ["report", str(run_dir / "summary.json"), "--html", "--out", str(out)])
    assert html.exit_code == 0, html.output
    assert sorted(_figure_keys(out.read_text())) == sorted(SINGLE_FIGURES)


def test_a_finished_run_writes_report_html_beside_its_summary(tmp_path: Path) -> None:
    # Logging it to the MLflow parent run is checked on a real pipeline run, where the run exists
    # (tests/integration/test_local_pipeline.py): a fresh sqlite store here would cost more than the rest.
    run_dir = make_run_folder(tmp_path / "run")
    assert write_run_report(run_dir, {"tracking": {}}, Console(quiet=True)) == run_dir / "report.html"
    assert 'data-figure="reliability"' in (run_dir / "report.html").read_text()


def test_a_report_that_cannot_render_warns_and_does_not_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "summary.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="rooivalk.cli.local_run"):
        assert write_run_report(tmp_path, {}, Console(quiet=True)) is None
    assert "report.html not written: JSONDecodeError" in caplog.text


def test_a_summary_kept_without_its_run_folder_renders_with_notes(tmp_path: Path) -> None:
    summary = Path(__file__).resolve().parents[3] / "docs" / "results" / "fashion_finetune"
    out = tmp_path / "kept.html"
    result = CliRunner().invoke(
        app, ["report", str(summary / "fashion_finetune_summary.json"), "--html", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert _figure_keys(text) == []
    assert "<h2>Notes</h2>" in text
    assert "no training curves" in text


@pytest.mark.parametrize("run_id", ["offline-3f2a", "0123abcd"])
def test_lineage_from_a_tracking_server_that_is_down_costs_a_note_not_mlflows_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_id: str
) -> None:
    # Asked of a dead server, MLflow's client retries for minutes: the report must not ask it at all.
    import json
    import socket

    from rooivalk.cli.report_data import load_run_folder
    from rooivalk.tracking import runs

    def no_client(uri: str) -> None:
        raise AssertionError(f"MLflow asked at {uri}")

    monkeypatch.setattr(runs, "client_for", no_client)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    run_dir = make_run_folder(tmp_path / "run")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["tracking"] = {"uri": dead, "run_id": run_id}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    folder = load_run_folder(run_dir, tracking=True)
    reason = "was buffered while" if run_id.startswith("offline-") else "does not answer /health"
    assert any("lineage tags not read from MLflow (TrackingOffline" in n and reason in n for n in folder.notes)
    assert folder.lineage["mlflow_run"] == f"{run_id} at {dead}"
