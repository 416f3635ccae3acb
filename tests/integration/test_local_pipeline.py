"""Whole pipelines through `rooivalk run` (kfp.local SubprocessRunner, MLflow on sqlite), as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from rooivalk import storage
from rooivalk.evaluation.profile import load_profile
from tests.conftest import make_image_folder, tiny_plan_dict

REPO = Path(__file__).resolve().parents[2]
FASHION_PLAN = REPO / "pipelines" / "plans" / "fashion_finetune.yaml"
WEIGHTS = REPO / ".cache" / "weights" / "tf_efficientnet_lite0.pth"

pytestmark = pytest.mark.integration


def _rooivalk(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rooivalk.cli.app", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        check=False,
    )


def _folder_with_bad_files(root: Path) -> Path:
    make_image_folder(root, per_class=24)
    (root / "circle" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 10)
    (root / "square" / "empty.png").write_bytes(b"")
    (root / "stripes" / "notes.txt").write_text("not an image")
    (root / "hexagon").mkdir()
    return root


def test_tiny_pipeline_end_to_end_with_quarantine_then_retraining_on_new_data(tmp_path: Path) -> None:
    source = _folder_with_bad_files(tmp_path / "images")
    plan_path = tmp_path / "plan.yaml"
    raw = tiny_plan_dict(str(source), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    serving_reference = tmp_path / "serving" / "reference"  # what the drift monitor reads
    raw["monitoring"] = {"reference_uri": str(serving_reference)}
    plan_path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    result = _rooivalk("run", str(plan_path), "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert summary["dataset_version"].startswith("ds-")
    assert list(summary["steps"]) == ["ingest_data", "train_model", "evaluate_model", "export_model", "register_model"]
    for name, step in summary["steps"].items():
        assert step["status"] == "succeeded", name
        assert step["seconds"] > 0
        for artifact in step["artifacts"].values():
            assert storage.sha256_tree(artifact["uri"]) == artifact["sha256"]
    assert summary["steps"]["evaluate_model"]["metrics"]["test_accuracy"] >= 0
    assert summary["steps"]["export_model"]["metrics"]["model_int8_static_latency_ms"] > 0
    # The reference profile for drift monitoring, on the validation split, versioned with the dataset.
    report = Path(summary["steps"]["evaluate_model"]["artifacts"]["report"]["uri"])
    profile, profile_info = load_profile(json.loads((report / "evaluation.json").read_text())["reference_profile"])
    assert profile_info.dataset_version == summary["dataset_version"]
    assert {"image_mean", "prediction", "confidence"} <= set(profile.columns)

    quarantine = json.loads(Path(summary["steps"]["ingest_data"]["artifacts"]["quarantine"]["uri"]).read_text())
    reasons = {Path(entry["origin"]).name: entry["reason"] for entry in quarantine}
    assert set(reasons) == {"corrupt.png", "empty.png", "notes.txt", "hexagon"}

    client = MlflowClient(summary["tracking"]["uri"])
    parent = client.get_run(summary["tracking"]["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.params["model.architecture"] == "test_efficientnet"
    # The training report, beside the summary and on the parent run (tests/unit/cli/test_report_html.py
    # checks its figures in Chromium).
    assert 'data-figure="training-model"' in (out / "report.html").read_text()
    assert "report.html" in [artifact.path for artifact in client.list_artifacts(parent.info.run_id)]
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == sorted(summary["steps"])
    assert all(c.info.status == "FINISHED" for c in children)
    train_run = next(c for c in children if c.info.run_name == "train_model")
    assert len(client.get_metric_history(train_run.info.run_id, "val_accuracy")) == 2  # one per epoch
    ingest_run = next(c for c in children if c.info.run_name == "ingest_data")  # the dataset card and version
    assert ingest_run.data.tags["rooivalk.dataset_version"] == summary["dataset_version"]
    assert {"dataset_card.json", "dataset_card.md"} <= {a.path for a in client.list_artifacts(ingest_run.info.run_id)}
    version = client.get_model_version_by_alias("tiny", "champion")
    assert version.tags["rooivalk.dataset_version"] == summary["dataset_version"]
    assert version.tags["rooivalk.plan_digest"]
    # The first champion's reference profile became the monitoring reference.
    assert load_profile(str(serving_reference))[1].dataset_version == summary["dataset_version"]

    # New data lands as a folder plus its _READY marker: the retraining pipeline ingests it as a new
    # dataset version, warm-starts the challenger from the champion, and compares the two on its test set.
    new_data = make_image_folder(tmp_path / "new-data", per_class=30, seed=11)
    (new_data / "_READY").write_text("")
    raw["retraining"] = {"warm_start": True}
    plan_path.write_text(yaml.safe_dump(raw))
    retrain_out = tmp_path / "retrain"
    result = _rooivalk("run", str(plan_path), "--out", str(retrain_out), "--retrain-from", str(new_data / "_READY"))
    assert result.returncode == 0, result.stdout + result.stderr
    retrained = json.loads((retrain_out / "summary.json").read_text())
    assert retrained["pipeline"] == "rooivalk-retraining"
    assert retrained["status"] == "succeeded"
    assert retrained["dataset_version"] != summary["dataset_version"]
    params = client.get_run(retrained["tracking"]["run_id"]).data.params
    assert params["data.source"] == str(new_data)
    assert params["model.pretrained"].endswith("/champion/model.pt")  # the champion's weights, copied by the run
    challenger = client.get_model_version_by_alias("tiny", "challenger")
    decision = json.loads(challenger.tags["rooivalk.promotion"])
    assert decision["champion_version"] == str(version.version)
    assert f"re-scored on dataset {retrained['dataset_version']}" in decision["reason"]
    # The monitoring reference follows the champion: replaced only when the challenger won.
    expected = retrained["dataset_version"] if decision["promoted"] else summary["dataset_version"]
    assert load_profile(str(serving_reference))[1].dataset_version == expected


def test_missing_source_fails_naming_the_path(tmp_path: Path) -> None:
    plan_path = tmp_path / "plan.yaml"
    missing = tmp_path / "no-such-folder"
    plan_path.write_text(yaml.safe_dump(tiny_plan_dict(str(missing))))
    out = tmp_path / "run"
    result = _rooivalk("run", str(plan_path), "--out", str(out))
    assert result.returncode == 1
    assert str(missing) in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["steps"]["ingest_data"]["status"] == "failed"
    assert summary["steps"]["train_model"]["status"] == "not_run"
    parent = MlflowClient(summary["tracking"]["uri"]).get_run(summary["tracking"]["run_id"])
    assert parent.info.status == "FAILED"


def test_validate_names_unknown_key(tmp_path: Path) -> None:
    raw = yaml.safe_load(FASHION_PLAN.read_text())
    raw["training"]["optimizer_name"] = "adamw"
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(raw))
    result = _rooivalk("validate", str(plan_path))
    assert result.returncode == 2
    assert "training.optimizer_name: unknown key" in result.stderr
    assert str(plan_path) in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not WEIGHTS.exists(), reason="run `make weights` first")
def test_fashion_plan_runs_unchanged_on_another_image_folder(tmp_path: Path) -> None:
    source = make_image_folder(tmp_path / "shapes", per_class=30, size=32)
    out = tmp_path / "run"
    result = _rooivalk(
        "run",
        str(FASHION_PLAN),
        "--out",
        str(out),
        "--set",
        f"data.source={source}",
        "--set",
        "data.format=image_folder",
        "--set",
        "evaluation.fail_on_gate=false",
        "--set",
        "export.quantization.samples=32",
        "--set",
        "training.budget_seconds=6",  # the plan's 9 minutes, cut for a test; the schedule stays auto
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    model_dir = Path(summary["steps"]["train_model"]["artifacts"]["model"]["uri"])
    info = json.loads((model_dir / "model.json").read_text())
    assert info["classes"] == ["circle", "square", "stripes"]  # class count detected from the folders
    assert [s["stage"] for s in summary["steps"]["train_model"]["stages"]] == ["head", "all"]


@pytest.mark.slow
def test_rerunning_a_killed_run_resumes_training(tmp_path: Path) -> None:
    """Kill `rooivalk run` (and its step processes) mid-training; the same command resumes."""
    import os
    import signal
    import time

    source = make_image_folder(tmp_path / "images", per_class=24)
    plan = tiny_plan_dict(str(source))
    plan["training"].update({"epochs": 16, "checkpoint": {"every_steps": 2}})
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(plan))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "rooivalk.cli.app", "run", str(plan_path), "--out", str(out)]
    first = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    manifest = out / "checkpoints" / "train_model" / "manifest.json"
    deadline = time.monotonic() + 180
    while not (
        manifest.exists()
        and json.loads(manifest.read_text() or "[]")[-1:]
        and json.loads(manifest.read_text())[-1]["global_step"] >= 10
    ):
        assert first.poll() is None, "run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the CLI and kfp.local's step subprocesses
    first.wait()

    result = _rooivalk("run", str(plan_path), "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    steps = json.loads((out / "summary.json").read_text())["steps"]
    train = steps["train_model"]
    assert train["status"] == "succeeded"
    assert "/checkpoints/train_model/ckpt-" in train["resumed_from"]
    steps_per_epoch = steps["ingest_data"]["metrics"]["train_size"] // 8  # full batches
    assert train["metrics"]["global_steps"] == 16 * steps_per_epoch  # nothing repeated or skipped
