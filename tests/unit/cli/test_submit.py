"""`rooivalk submit` against a Kubeflow Pipelines API server.

No KFP API server can run on this machine (it needs a Kubernetes cluster, MySQL and Argo), so a small
HTTP server on loopback (kfp_api_fake.FakeKfpApi) stands in for it: it answers the KFP v2beta1 REST
paths with the JSON the real server returns and records each request. Everything from kfp.Client
down to the HTTP bytes is real: the compiled IR, kfp.Client, its generated kfp_server_api request
layer, urllib3 and the socket; the tests read what reached the wire."""

from __future__ import annotations

import hashlib
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from rooivalk.cli import app
from rooivalk.cli.common import CLUSTER_TRACKING_URI
from rooivalk.cli.submit import DEFAULT_TOKEN_PATH, TOKEN_ENV, SubmitError, parse_params
from rooivalk.plan import Plan, load_plan
from tests.unit.cli.kfp_api_fake import FakeKfpApi

REPO = Path(__file__).resolve().parents[3]
FASHION = REPO / "pipelines" / "plans" / "fashion_finetune.yaml"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_ambient_kfp_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # The token and endpoint a pod or a shell may carry would change what is sent.
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    assert not Path(DEFAULT_TOKEN_PATH).exists(), "this machine has a KFP token: the tests expect none"


@pytest.fixture
def kfp_api() -> Iterator[FakeKfpApi]:
    api = FakeKfpApi().start()
    yield api
    api.stop()


def _submit(host: str, *args: str) -> Result:
    return runner.invoke(app, ["submit", str(FASHION), "--host", host, *args])


def _flat(result: Result) -> str:
    # Rich wraps stderr at 80 columns in the runner; the words are what matter.
    return " ".join(result.output.split())


def _cluster_plan() -> Plan:
    """The plan as the pods get it: the cluster's MLflow service filled in, as compile does."""
    plan = load_plan(FASHION, [])
    return plan.model_copy(update={"tracking": plan.tracking.model_copy(update={"uri": CLUSTER_TRACKING_URI})})


def _run_body(api: FakeKfpApi) -> dict[str, Any]:
    (request,) = api.sent("POST", "/runs")
    body: dict[str, Any] = request.json()
    return body


def test_first_submit_uploads_the_compiled_pipeline_and_starts_a_run(kfp_api: FakeKfpApi) -> None:
    result = _submit(kfp_api.url, "--param", "run_key=abc123", "--run-name", "first")
    assert result.exit_code == 0, result.output

    (upload,) = kfp_api.sent("POST", "/pipelines/upload")
    assert upload.arg("name") == "fashion-finetune-training"
    assert upload.arg("namespace") is None  # no --namespace: a shared pipeline
    filename, content = upload.files()["uploadfile"]
    assert filename == "pipeline.yaml"
    spec = yaml.safe_load(content)
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert set(inputs) == {"plan", "run_key"}
    # The IR stores numbers as floats (protobuf Struct); validated again, the default is the plan.
    assert Plan.model_validate(inputs["plan"]["defaultValue"]) == _cluster_plan()

    (pipeline,) = kfp_api.pipelines.values()
    (version,) = kfp_api.versions[pipeline["pipeline_id"]]
    (experiment,) = kfp_api.experiments.values()
    assert experiment["display_name"] == "fashion-finetune"  # the plan's tracking.experiment
    body = _run_body(kfp_api)
    assert body["display_name"] == "first"
    assert body["experiment_id"] == experiment["experiment_id"]
    assert body["pipeline_version_reference"] == {
        "pipeline_id": pipeline["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    parameters = body["runtime_config"]["parameters"]
    assert parameters["run_key"] == "abc123"
    assert parameters["plan"] == _cluster_plan().to_parameter()
    assert all("authorization" not in r.headers for r in kfp_api.requests)  # no token file: none sent

    (run_id,) = kfp_api.runs
    for shown in (pipeline["pipeline_id"], version["pipeline_version_id"], run_id):
        assert shown in result.output
    assert f"{kfp_api.url}/#/runs/details/{run_id}" in result.output


def test_second_submit_uploads_a_new_version_of_the_same_pipeline(kfp_api: FakeKfpApi) -> None:
    assert _submit(kfp_api.url).exit_code == 0
    result = _submit(kfp_api.url, "--set", "training.budget_seconds=300")
    assert result.exit_code == 0, result.output

    assert len(kfp_api.sent("POST", "/pipelines/upload")) == 1
    (upload,) = kfp_api.sent("POST", "/pipelines/upload_version")
    (pipeline_id,) = kfp_api.pipelines
    assert upload.arg("pipelineid") == pipeline_id
    _, content = upload.files()["uploadfile"]
    digest = hashlib.sha256(content).hexdigest()[:12]
    assert re.fullmatch(rf"0\.1\.0-{digest}-\d{{8}}-\d{{6}}", upload.arg("name") or ""), upload.arg("name")

    first, second = kfp_api.versions[pipeline_id]
    assert second["display_name"] == upload.arg("name")
    runs = [r.json() for r in kfp_api.sent("POST", "/runs")]
    assert [r["pipeline_version_reference"]["pipeline_version_id"] for r in runs] == [
        first["pipeline_version_id"],
        second["pipeline_version_id"],
    ]
    assert len(kfp_api.experiments) == 1  # the existing experiment is reused
    assert runs[1]["runtime_config"]["parameters"]["plan"]["training"]["budget_seconds"] == 300


def test_namespace_and_in_cluster_token_reach_the_api(
    kfp_api: FakeKfpApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "token"
    token.write_text("projected-sa-token\n")
    monkeypatch.setenv(TOKEN_ENV, str(token))  # how the pod spec points at its projected token
    result = _submit(kfp_api.url, "--namespace", "team-a", "--experiment", "retrain")
    assert result.exit_code == 0, result.output

    assert kfp_api.sent("POST", "/pipelines/upload")[0].arg("namespace") == "team-a"
    assert kfp_api.sent("GET", "/pipelines")[0].arg("namespace") == "team-a"
    assert kfp_api.sent("GET", "/experiments")[0].arg("namespace") == "team-a"
    created = kfp_api.sent("POST", "/experiments")[0].json()
    assert created == {"display_name": "retrain", "namespace": "team-a"}
    (experiment,) = kfp_api.experiments.values()
    # A v2beta1 run has no namespace field: it runs in its experiment's namespace.
    assert _run_body(kfp_api)["experiment_id"] == experiment["experiment_id"]
    assert {r.headers.get("authorization") for r in kfp_api.requests} == {"Bearer projected-sa-token"}


def test_new_data_starts_the_retraining_pipeline_on_that_object(kfp_api: FakeKfpApi) -> None:
    result = _submit(kfp_api.url, "--pipeline", "retraining", "--param", "data_uri=s3://drone-data/batch-7.tar")
    assert result.exit_code == 0, result.output
    assert kfp_api.sent("POST", "/pipelines/upload")[0].arg("name") == "fashion-finetune-retraining"
    assert _run_body(kfp_api)["runtime_config"]["parameters"]["data_uri"] == "s3://drone-data/batch-7.tar"


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("data_uir=s3://b/k", "--param data_uir: the pipeline declares no such parameter (it takes: run_key)"),
        ("plan={}", "the plan comes from the plan file; change it with --set"),
        ("run_key", "--param 'run_key': expected name=value"),
    ],
)
def test_bad_param_is_refused_before_any_request(kfp_api: FakeKfpApi, param: str, expected: str) -> None:
    result = _submit(kfp_api.url, "--param", param)
    assert result.exit_code == 2
    assert expected in _flat(result)
    assert kfp_api.requests == []


def test_param_values_take_the_declared_type() -> None:
    declared = {"plan": "STRUCT", "epochs": "NUMBER_INTEGER", "lr": "NUMBER_DOUBLE", "fast": "BOOLEAN"}
    parsed = parse_params(["epochs=3", "lr=0.5", "fast=True"], declared)
    assert parsed == {"epochs": 3, "lr": 0.5, "fast": True}
    with pytest.raises(SubmitError, match="--param epochs=three: not a NUMBER_INTEGER value"):
        parse_params(["epochs=three"], declared)


def test_unreachable_host_gives_one_clear_line() -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    host = f"http://127.0.0.1:{port}"
    result = _submit(host)
    assert result.exit_code == 1
    assert _flat(result) == f"error: cannot reach the KFP API at {host} (connection refused)"
    assert isinstance(result.exception, SystemExit)  # no traceback


def test_forbidden_names_the_host_and_how_credentials_are_picked() -> None:
    api = FakeKfpApi(mode="deny", deny_status=403).start()
    try:
        result = _submit(api.url)
    finally:
        api.stop()
    assert result.exit_code == 1
    message = _flat(result)
    assert f"the KFP API at {api.url} refused" in message
    assert "HTTP 403 Forbidden: User is not authorized to access the resource" in message
    assert "submit sent no credentials" in message
    assert f"--token-path, else ${TOKEN_ENV}, else {DEFAULT_TOKEN_PATH}" in message
    assert "Traceback" not in result.output


def test_a_server_without_the_api_is_called_a_wrong_host() -> None:
    api = FakeKfpApi(mode="not-kfp").start()
    try:
        result = _submit(api.url)
    finally:
        api.stop()
    assert result.exit_code == 1
    assert f"the KFP API at {api.url} answered HTTP 404 Not Found while" in _flat(result)
    assert "is --host the KFP API server" in _flat(result)


def test_missing_token_file_is_refused(kfp_api: FakeKfpApi, tmp_path: Path) -> None:
    result = _submit(kfp_api.url, "--token-path", str(tmp_path / "absent"))
    assert result.exit_code == 2
    assert "no such file" in _flat(result)
    assert kfp_api.requests == []


@pytest.mark.parametrize(("state", "exit_code"), [("SUCCEEDED", 0), ("FAILED", 1)])
def test_wait_exits_non_zero_unless_the_run_succeeded(state: str, exit_code: int) -> None:
    api = FakeKfpApi(final_state=state).start()
    try:
        result = _submit(api.url, "--wait", "--timeout", "30")
    finally:
        api.stop()
    assert result.exit_code == exit_code, result.output
    (run_id,) = api.runs
    assert api.sent("GET", f"/runs/{run_id}")  # polled the run
    assert (f"run {run_id} SUCCEEDED" in result.output) == (state == "SUCCEEDED")
    assert (f"run {run_id} ended FAILED" in _flat(result)) == (state == "FAILED")


def test_token_settings_match_kfps() -> None:
    from kfp import client

    assert (TOKEN_ENV, DEFAULT_TOKEN_PATH) == (client.KF_PIPELINES_SA_TOKEN_ENV, client.KF_PIPELINES_SA_TOKEN_PATH)
