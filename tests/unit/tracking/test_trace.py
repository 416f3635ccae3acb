"""Traceability both ways on a real MLflow store (sqlite): two registered versions on two dataset versions
(the second re-scores the first, the champion, on its data, and fails a requirement), then `rooivalk trace
model|dataset|requirement` down from a version and up from a dataset version or a requirement, as JSON
and as tables, and the one-line errors (exit 2) for what is not there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from rooivalk.cli.app import app
from rooivalk.tracking.trace import TraceError, trace_dataset, trace_model, trace_requirement
from tests.unit.tracking.registered_versions import lifecycle_plan, register_version


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(run folder holding mlflow.db, model name): version 1 on ds-1, approved; version 2 on ds-2, recall
    0.85 (fails REQ-REC): it beats version 1 re-scored on ds-2 at 0.7, but is not promoted."""
    folder = tmp_path_factory.mktemp("trace")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    plan = lifecycle_plan(uri)
    name, first = register_version(folder, plan, 0.8, "a", dataset_version="ds-1")
    result = CliRunner().invoke(app, ["approve", name, first, "--by", "A. Engineer", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    register_version(folder, plan, 0.9, "b", dataset_version="ds-2", recall=0.85, rescore=lambda _v: 0.7)
    return folder, name


def _uri(store: tuple[Path, str]) -> str:
    return f"sqlite:///{store[0] / 'mlflow.db'}"


def _trace(store: tuple[Path, str], *args: str) -> Any:
    # Wide, so that the table cells the tests look for are not folded.
    return CliRunner().invoke(app, ["trace", *args, "--tracking-uri", str(store[0])], env={"COLUMNS": "250"})


def test_trace_model_goes_down_to_data_requirements_and_code(store: tuple[Path, str]) -> None:
    client = MlflowClient(_uri(store))
    first = trace_model(client, store[1], "1")
    assert (first["status"], first["previous_version"]) == ("released", None)
    assert first["aliases"] == ["champion", "released"]
    assert first["approval"]["by"] == "A. Engineer"
    assert [h["status"] for h in first["status_history"]] == ["draft", "training", "validated", "released"]
    dataset = first["dataset"]
    assert (dataset["version"], dataset["samples"]) == ("ds-1", {"train": 60, "val": 20, "test": 20})
    assert dataset["card"]["sources"] == [{"name": "s3://data/ds-1", "uri": "s3://data/ds-1", "reader": "image_folder"}]
    assert dataset["card"]["counts"]["per_split"]["test"] == {"total": 20, "per_class": {"drone": 10, "bird": 10}}
    assert first["requirements"] == [
        {"id": "REQ-REC", "text": "drones are found", "metric": "test_recall", "class_name": "drone", "min": 0.9,
         "max": None, "value": 0.95, "verdict": "pass"},
        {"id": "REQ-LAT", "text": "fast", "metric": "model_fp32_latency_p95_ms", "class_name": None, "min": None,
         "max": 20.0, "value": 3.2, "verdict": "pass"},
    ]  # fmt: skip
    assert first["plan_digest"] == lifecycle_plan(_uri(store)).digest()
    assert first["git_commit"]
    assert "mlflow" in first["packages"]
    assert first["training"]["train_model"]["epochs"] == 5
    assert first["runs"]["ingest_data"] == dataset["ingest_run_id"]

    second = trace_model(client, store[1], "2")
    assert (second["status"], second["previous_version"], second["dataset"]["version"]) == ("training", "1", "ds-2")
    assert (second["requirements"][0]["verdict"], second["requirements"][0]["value"]) == ("fail", 0.85)
    assert "re-scored on dataset ds-2" in second["promotion"]["reason"]
    assert second["promotion"]["reason"].endswith("not promoted: not validated: REQ-REC failed")


def test_trace_dataset_goes_up_to_runs_and_versions(store: tuple[Path, str]) -> None:
    client = MlflowClient(_uri(store))
    first = trace_dataset(client, "ds-1")
    [run] = first["pipeline_runs"]
    assert (run["pipeline"], run["status"]) == ("rooivalk-training", "RUNNING")  # the test never closes it
    assert [s["step"] for s in run["steps"]] == [
        "ingest_data", "train_model", "evaluate_model", "export_model", "register_model"
    ]  # fmt: skip
    assert [(v["version"], v["status"], v["aliases"]) for v in first["model_versions"]] == [
        ("1", "released", ["champion", "released"])
    ]
    assert first["rescored"] == []
    assert first["card"]["manifest_digest"] == "d" * 64

    second = trace_dataset(client, "ds-2")
    assert [v["version"] for v in second["model_versions"]] == ["2"]
    assert second["rescored"] == [
        {"name": store[1], "version": "1", "metric": "test_accuracy", "score": 0.7, "challenger_version": "2",
         "challenger_score": 0.9, "promoted": False}
    ]  # fmt: skip


def test_trace_requirement_lists_every_version_with_its_value(store: tuple[Path, str]) -> None:
    found = trace_requirement(MlflowClient(_uri(store)), "REQ-REC")
    assert found["requirement"]["text"] == "drones are found"
    assert found["requirement"]["stated_by"] == f"{store[1]} version 2"
    rows = [(v["version"], v["value"], v["verdict"], v["status"], v["dataset_version"]) for v in found["versions"]]
    assert rows == [("1", 0.95, "pass", "released", "ds-1"), ("2", 0.85, "fail", "training", "ds-2")]


def test_tag_filters_refused_by_the_registry_fall_back_to_listing(store: tuple[Path, str]) -> None:
    client = MlflowClient(_uri(store))
    search = client.search_model_versions

    def refuse_tag_filters(filter_string: str | None = None, **kwargs: Any) -> Any:
        if filter_string and "tags." in filter_string:
            raise MlflowException("tag filters are not supported")
        return search(filter_string, **kwargs)

    client.search_model_versions = refuse_tag_filters  # type: ignore[method-assign]
    assert [v["version"] for v in trace_requirement(client, "REQ-LAT", store[1])["versions"]] == ["1", "2"]
    assert [v["version"] for v in trace_dataset(client, "ds-2")["model_versions"]] == ["2"]


def test_trace_commands_print_json_and_tables(store: tuple[Path, str]) -> None:
    name = store[1]
    as_json = _trace(store, "model", name, "2", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == trace_model(MlflowClient(_uri(store)), name, "2")
    table = _trace(store, "model", name, "1")
    assert table.exit_code == 0, table.output
    shown = [
        "version 1", "by A. Engineer", "training train_model: 5 epochs", "dataset ds-1 (train 60, val 20, test 20)",
        "REQ-REC", "test_recall[drone] >= 0.9", "0.95", "source s3://data/ds-1", "images per class and split",
    ]  # fmt: skip
    for expected in shown:
        assert expected in table.output

    dataset = _trace(store, "dataset", "ds-2")
    assert dataset.exit_code == 0, dataset.output
    assert "champions re-scored on it" in dataset.output
    assert "test_accuracy 0.7" in dataset.output
    assert json.loads(_trace(store, "dataset", "ds-2", "--json").stdout)["rescored"][0]["version"] == "1"

    requirement = _trace(store, "requirement", "REQ-REC", "--model", name)
    assert requirement.exit_code == 0, requirement.output
    assert "drones are found" in requirement.output
    assert "│ 2       │ 0.85     │ fail" in requirement.output
    rows = json.loads(_trace(store, "requirement", "REQ-REC", "--json").stdout)["versions"]
    assert [row["verdict"] for row in rows] == ["pass", "fail"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model", "nope", "1"], "no registered model 'nope'"),
        (["model", "lifecycle", "9"], "registered model 'lifecycle' has no version '9' (versions: 1, 2)"),
        (["dataset", "ds-9"], "no dataset version 'ds-9': no ingest run or model version carries it"),
        (["requirement", "REQ-X"], "carries requirement 'REQ-X'; requirement ids in the registry: REQ-LAT, REQ-REC"),
        (["requirement", "REQ'X"], 'carries requirement "REQ\'X"'),
        (["requirement", "REQ-REC", "--model", "nope"], "no registered model 'nope'"),
    ],
)
def test_unknown_input_is_one_line_and_exit_2(store: tuple[Path, str], args: list[str], message: str) -> None:
    result = _trace(store, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_library_errors_are_trace_errors(store: tuple[Path, str]) -> None:
    with pytest.raises(TraceError, match="no dataset version 'x'"):
        trace_dataset(MlflowClient(_uri(store)), "x")
