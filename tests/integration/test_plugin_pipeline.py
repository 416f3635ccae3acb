"""A plan on a plugin's reader and model family, through `rooivalk run` twice: the rerun resumes.

The example plugin (tests/plugins/rooivalk_example_plugin) is an installed distribution, so the step
subprocesses find `example_csv_images` and `example_mlp_cnn` through their entry points as a user's
installed package would be found. Two whole local pipelines: about a minute each on two cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rooivalk import storage
from tests.plugin_helpers import make_csv_images

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _plan(source: Path) -> dict[str, object]:
    return {
        "name": "plugin-tiny",
        "data": {
            "source": str(source),
            "format": "example_csv_images",
            "split": {"train": 0.6, "val": 0.2, "test": 0.2},
        },
        "model": {"family": "example_mlp_cnn", "architecture": "tiny", "input_size": 16, "drop_rate": 0.0},
        "training": {"batch_size": 8, "epochs": 2, "lr": 3e-3, "threads": 1, "max_train_batches": 3},
        "export": {"precisions": ["fp32"], "latency_runs": 100, "latency_warmup": 1},
        "tracking": {"experiment": "plugin-tiny"},
    }


def test_plugin_reader_and_family_run_evaluate_export_and_resume(tmp_path: Path) -> None:
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(_plan(make_csv_images(tmp_path / "shapes.csv", per_class=20))))
    command = [sys.executable, "-m", "rooivalk.cli.app", "run", str(plan_path), "--out", str(tmp_path / "run")]
    summaries = []
    for _ in range(2):  # the same command twice: the second run resumes from the first one's checkpoint
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        summaries.append((json.loads((tmp_path / "run" / "summary.json").read_text()), result.stdout))

    first, (second, second_stdout) = summaries[0][0], summaries[1]
    for summary in (first, second):
        assert summary["status"] == "succeeded"
        assert list(summary["steps"]) == [
            "ingest_data",
            "train_model",
            "evaluate_model",
            "export_model",
            "register_model",
        ]
        for step in summary["steps"].values():
            assert step["status"] == "succeeded"
            for artifact in step["artifacts"].values():
                assert storage.sha256_tree(artifact["uri"]) == artifact["sha256"]
    assert first["steps"]["ingest_data"]["metrics"]["num_quarantined"] == 3  # the CSV's bad rows
    assert first["steps"]["train_model"]["resumed_from"] is None
    assert "/checkpoints/train_model/ckpt-" in second["steps"]["train_model"]["resumed_from"]
    assert "resumed from" in second_stdout
    assert second["dataset_version"] == first["dataset_version"]

    model_dir = Path(second["steps"]["train_model"]["artifacts"]["model"]["uri"])
    info = json.loads((model_dir / "model.json").read_text())
    assert (info["spec"]["family"], info["classes"]) == ("example_mlp_cnn", ["circle", "square", "stripes"])
    assert second["steps"]["evaluate_model"]["metrics"]["test_accuracy"] >= 0
    export = second["steps"]["export_model"]
    assert export["metrics"]["model_latency_ms"] > 0
    assert {"model.onnx", "bundle.json"} <= set(export["artifacts"])
