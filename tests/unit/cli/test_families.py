"""`rooivalk families`: what is installed and where it comes from; a broken plugin is named, exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from rooivalk.cli import app
from rooivalk.plugins import FAMILIES_GROUP, TASKS_GROUP
from tests.plugin_helpers import fake_distribution

runner = CliRunner()


def _families() -> Result:
    # Wide enough that rich keeps each table row on one line.
    return runner.invoke(app, ["families"], env={"COLUMNS": "240"})


def _rows(output: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in output.splitlines() if "│" in line]


def test_families_lists_families_readers_and_tasks_with_their_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "rooivalk_test_cli_task_mod"
    fake_distribution(
        monkeypatch,
        tmp_path,
        "rooivalk-test-cli-task",
        {TASKS_GROUP: {"cli_example_task": f"{module}:Task"}},
        {
            module: "from rooivalk.training.tasks import ImageClassification\n\n\n"
            "class Task(ImageClassification):\n    name = 'cli_example_task'\n"
        },
    )
    result = _families()
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    example = "rooivalk-example-plugin 0.1.0"
    assert ["timm", "image", "built-in"] in rows
    assert ["rf_cnn_transformer", "tensor", "built-in"] in rows
    assert [
        "example_mlp_cnn",
        "example_noisy_images",
        f"{example} (rooivalk_example_plugin.model:create_example_mlp_cnn)",
    ] in rows
    assert ["tensor", "built-in"] in rows
    assert ["example_noisy_images", f"{example} (rooivalk_example_plugin.task:NoisyImages)"] in rows
    assert ["image_folder", "built-in"] in rows
    assert ["example_csv_images", f"{example} (rooivalk_example_plugin.reader:read_csv_images)"] in rows
    assert ["cli_example_task", f"rooivalk-test-cli-task 1.0 ({module}:Task)"] in rows
    assert "multisensor" in result.output


def test_families_names_a_broken_plugin_and_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = "rooivalk_test_cli_broken_mod"
    fake_distribution(
        monkeypatch,
        tmp_path,
        "rooivalk-test-cli-broken",
        {FAMILIES_GROUP: {"cli_broken": f"{module}:build"}},
        {module: "raise RuntimeError('the plugin cannot start')\n"},
    )
    result = _families()
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert (
        f"error: rooivalk.families entry point 'cli_broken' = '{module}:build' of rooivalk-test-cli-broken 1.0 "
        "failed to load: RuntimeError: the plugin cannot start"
    ) in message
