"""A whole pipeline against real servers on loopback: its data source and checkpoints in S3 (moto's
server), tracking and the registry on an `mlflow server` whose artifact store is that S3. Also:
tracking that survives an unreachable server (buffer + `rooivalk sync`), champion/challenger, and no
credential in any output. No mocks."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import mlflow.artifacts
import pytest
import yaml
from mlflow.tracking import MlflowClient

from rooivalk import storage
from rooivalk._dev.servers import Server, free_port
from rooivalk.evaluation.rescore import model_test_metrics
from rooivalk.plan import Plan, PromotionSpec
from rooivalk.tracking.promotion import RescoreUnavailable, promote_challenger
from tests.conftest import make_image_folder, tiny_plan_dict
from tests.integration.test_local_pipeline import REPO, _rooivalk

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _upload_folder(folder: Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            storage.write_bytes(f"{prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes())


def _all_text(root: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file())


def test_pipeline_with_source_and_checkpoints_in_s3_and_tracking_on_a_server(
    s3_endpoint: str, mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = f"canary-secret-{uuid.uuid4().hex}"  # moto accepts any secret: plant one and look for it
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canary)
    _upload_folder(make_image_folder(tmp_path / "images", per_class=24), "s3://rooivalk/source/tiny")
    raw = tiny_plan_dict("s3://rooivalk/source/tiny", tracking_uri=mlflow_server)
    raw["training"]["checkpoint"] = {"uri": "s3://rooivalk/checkpoints/tiny"}
    raw["tracking"]["experiment"] = "s3-server"
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    result = _rooivalk("run", str(plan_path), "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert summary["tracking"]["buffered_records"] == 0

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="rooivalk")["Contents"]}
    assert {"checkpoints/tiny/manifest.json", "checkpoints/tiny/best.pt"} <= keys
    # The registered model went through the server's proxied artifact store into its bucket.
    stored = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow-artifacts").get("Contents", [])]
    assert any(key.endswith("MLmodel") for key in stored)

    client = MlflowClient(tracking_uri=mlflow_server)
    version = client.get_model_version_by_alias("tiny", "champion")
    assert client.get_model_version_by_alias("tiny", "challenger").version == version.version
    tags = version.tags
    assert tags["rooivalk.dataset_version"] == summary["dataset_version"]
    for key in ("rooivalk.plan_digest", "rooivalk.git_commit", "rooivalk.version.torch", "rooivalk.parent_run_id"):
        assert tags[key], key
    assert json.loads(tags["rooivalk.promotion"])["reason"] == "no champion yet"

    # No credential anywhere: run folder files, MLflow params and tags of every run, version tags.
    runs = client.search_runs([client.get_experiment_by_name("s3-server").experiment_id])
    recorded = json.dumps([[r.data.params, r.data.tags] for r in runs]) + json.dumps(tags)
    assert canary not in recorded
    assert canary not in _all_text(out)
    assert canary not in result.stdout + result.stderr

    # New data lands: the retrained challenger is compared with the champion re-scored on the new
    # test set (its recorded score was on the old dataset version), not with its old score.
    _upload_folder(make_image_folder(tmp_path / "images2", per_class=30, seed=7), "s3://rooivalk/source/tiny2")
    raw["data"]["source"] = "s3://rooivalk/source/tiny2"
    plan_path.write_text(yaml.safe_dump(raw))
    second = _rooivalk("run", str(plan_path), "--out", str(tmp_path / "run2"))
    assert second.returncode == 0, second.stdout + second.stderr
    summary2 = json.loads((tmp_path / "run2" / "summary.json").read_text())
    assert summary2["dataset_version"] != summary["dataset_version"]
    challenger = client.get_model_version_by_alias("tiny", "challenger")
    decision = json.loads(challenger.tags["rooivalk.promotion"])
    assert decision["champion_version"] == version.version
    assert f"re-scored on dataset {summary2['dataset_version']}" in decision["reason"]
    # The re-score is the old champion's own model on the new test split.
    dataset_dir = next((tmp_path / "run2" / "pipeline_root").rglob("dataset.json")).parent
    champion_dir = mlflow.artifacts.download_artifacts(
        run_id=version.run_id, artifact_path="trained_model", dst_path=str(tmp_path / "v1"), tracking_uri=mlflow_server
    )
    plan = Plan.model_validate(raw)
    expected = model_test_metrics(plan, str(dataset_dir), champion_dir)["test_accuracy"]
    assert decision["champion_score"] == pytest.approx(expected)


def test_unreachable_server_buffers_tracking_and_sync_replays_it_once(mlflow_server: str, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    raw = tiny_plan_dict(str(make_image_folder(tmp_path / "images", per_class=24)), tracking_uri=dead)
    raw["tracking"]["experiment"] = "offline"
    raw["tracking"]["registered_model"] = "tiny-offline"
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    result = _rooivalk("run", str(plan_path), "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr  # training was not taken down
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert summary["tracking"]["buffered_records"] > 0
    assert f"rooivalk sync {out}" in summary["tracking"]["note"]
    assert "records buffered" in result.stdout

    synced = _rooivalk("sync", str(out), "--tracking-uri", mlflow_server)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("offline").experiment_id
    runs = client.search_runs([experiment])
    steps = sorted(r.data.tags.get("rooivalk.step", "") for r in runs)
    assert steps == ["", "evaluate_model", "export_model", "ingest_data", "register_model", "train_model"]
    parent = next(r for r in runs if "rooivalk.step" not in r.data.tags)
    assert parent.info.status == "FINISHED"
    version = client.get_model_version_by_alias("tiny-offline", "champion")
    assert version.tags["rooivalk.dataset_version"] == summary["dataset_version"]

    again = _rooivalk("sync", str(out), "--tracking-uri", mlflow_server)
    assert again.returncode == 0
    assert "synced 0 records" in again.stdout
    assert len(client.search_runs([experiment])) == len(runs)
    assert len(client.search_model_versions("name='tiny-offline'")) == 1


def test_challenger_takes_champion_only_when_better_by_the_margin_on_the_same_test_set(mlflow_server: str) -> None:
    client = MlflowClient(tracking_uri=mlflow_server)
    name = f"promo-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)

    def new_version(dataset: str) -> str:
        version = client.create_model_version(
            name, "s3://mlflow-artifacts/none", tags={"rooivalk.dataset_version": dataset}
        )
        return str(version.version)

    spec = PromotionSpec(margin=0.01)

    def promote(version: str, score: float, dataset: str = "ds-a"):  # type: ignore[no-untyped-def]
        return promote_challenger(
            mlflow_server, name, version, {"test_accuracy": score}, dataset, spec, "test_accuracy"
        )

    first = promote(new_version("ds-a"), 0.90)
    assert first.promoted
    assert first.reason == "no champion yet"
    close = promote(new_version("ds-a"), 0.905)  # better, but not by more than the margin
    assert not close.promoted
    assert close.champion_score == pytest.approx(0.90)
    assert client.get_model_version_by_alias(name, "champion").version == first.challenger_version
    assert client.get_model_version_by_alias(name, "challenger").version == close.challenger_version
    other_set = promote(new_version("ds-b"), 0.99, dataset="ds-b")  # not comparable: another test set
    assert not other_set.promoted
    assert "cannot be re-scored" in other_set.reason
    better = promote(new_version("ds-a"), 0.93)
    assert better.promoted
    assert better.champion_version == first.challenger_version
    assert client.get_model_version_by_alias(name, "champion").version == better.challenger_version
    logged = json.loads(client.get_model_version(name, better.challenger_version).tags["rooivalk.promotion"])
    assert logged["champion_score"] == pytest.approx(0.90)
    assert logged["challenger_score"] == pytest.approx(0.93)

    # New data (dataset ds-c): the champion is re-scored there when it can be, else kept.
    def unavailable(version: str) -> float:
        raise RescoreUnavailable(f"its run has no 'trained_model' artifact (v{version})")

    kept = promote_challenger(
        mlflow_server, name, new_version("ds-c"), {"test_accuracy": 0.99}, "ds-c", spec, "test_accuracy", unavailable
    )
    assert not kept.promoted
    assert "no 'trained_model' artifact" in kept.reason
    rescored_versions: list[str] = []

    def rescore(version: str) -> float:
        rescored_versions.append(version)
        return 0.70

    moved = promote_challenger(
        mlflow_server, name, new_version("ds-c"), {"test_accuracy": 0.80}, "ds-c", spec, "test_accuracy", rescore
    )
    assert moved.promoted
    assert rescored_versions == [better.challenger_version]
    assert moved.champion_score == pytest.approx(0.70)
    assert "re-scored on dataset ds-c" in moved.reason
    with pytest.raises(KeyError, match="tracking.promotion.metric"):
        promote_challenger(mlflow_server, name, better.challenger_version, {"f1": 1.0}, "ds-a", spec, "test_accuracy")


def test_demo_s3_runs_a_plan_against_its_own_servers_and_says_where_to_look(tmp_path: Path) -> None:
    source = make_image_folder(tmp_path / "images", per_class=24)
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(tiny_plan_dict(str(source))))
    out = tmp_path / "demo"
    result = _rooivalk("demo-s3", str(plan_path), "--out", str(out), "--no-keep-running")
    assert result.returncode == 0, result.stdout + result.stderr
    text = " ".join(result.stdout.split())  # rich wraps long lines
    assert "uploaded 72 files" in text
    assert "MLflow UI: http://127.0.0.1:" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert summary["tracking"]["uri"].startswith("http://127.0.0.1:")
    plan = yaml.safe_load((out / "plan.yaml").read_text())
    assert plan["data"]["source"] == "s3://rooivalk-demo/tiny/source"
    assert plan["training"]["checkpoint"]["uri"] == "s3://rooivalk-demo/tiny/checkpoints"


def test_s3_gone_mid_pipeline_fails_naming_the_uri_and_a_rerun_completes_without_partial_objects(
    s3_server: Server, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server stops answering (SIGSTOP) while the train step is writing checkpoints to S3: the step
    retries, the pipeline fails naming the URI; once the server is back, a rerun completes and every
    object under the checkpoint prefix is whole (its bytes match its recorded sha256, no unfinished
    multipart upload). The byte-level case (paused between two parts of one multipart upload) is
    tests/integration/test_s3_storage.py."""
    for key, value in {"ROOIVALK_S3_MAX_ATTEMPTS": "2", "ROOIVALK_S3_CONNECT_TIMEOUT": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ROOIVALK_S3_READ_TIMEOUT", "2")
    _upload_folder(make_image_folder(tmp_path / "images", per_class=24), "s3://rooivalk/source/tiny")
    raw = tiny_plan_dict("s3://rooivalk/source/tiny", epochs=8)
    raw["training"]["checkpoint"] = {"uri": "s3://rooivalk/checkpoints/fault"}
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(raw))
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    command = [sys.executable, "-m", "rooivalk.cli.app", "run", str(plan_path), "--out", str(tmp_path / "run")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    paused = False
    try:
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            if s3.list_objects_v2(Bucket="rooivalk", Prefix="checkpoints/fault/").get("KeyCount", 0):
                os.kill(s3_server.process.pid, signal.SIGSTOP)  # first checkpoint written: pull the plug
                paused = True
                break
            time.sleep(0.05)
        output, _ = process.communicate(timeout=600)
    finally:
        os.kill(s3_server.process.pid, signal.SIGCONT)
    assert paused, "the train step never wrote a checkpoint"
    assert process.returncode != 0, output
    assert "s3://rooivalk/checkpoints/fault/" in output
    assert "attempts" in output  # it retried before giving up
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"

    rerun = _rooivalk("run", str(plan_path), "--out", str(tmp_path / "rerun"))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert s3.list_multipart_uploads(Bucket="rooivalk").get("Uploads", []) == []
    objects = s3.list_objects_v2(Bucket="rooivalk", Prefix="checkpoints/fault/")["Contents"]
    assert objects
    for item in objects:
        stored = s3.get_object(Bucket="rooivalk", Key=item["Key"])
        body = stored["Body"].read()
        assert stored["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest(), item["Key"]
