"""CSV and TensorBoard loggers beside MLflow: what a step logs lands in metrics.csv and in TensorBoard
event files (read back here with tensorboardX's own protos), in the step's MLflow run under logs/ and
under tracking.log_uri, also when the step fails. MLflow is real (sqlite)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from tensorboardX.proto.event_pb2 import Event

from rooivalk import tracking
from rooivalk.plan import PlanError, validate_plan
from rooivalk.steps import pipeline_step
from rooivalk.tracking.loggers import StepLoggers, read_csv_metrics


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from every event file below `folder` (TFRecord: length, crc, data, crc)."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_both_loggers_record_every_metric_and_copy_to_the_log_uri(tmp_path: Path) -> None:
    loggers = StepLoggers(["csv", "tensorboard"])
    loggers.log({"train_loss": 1.5, "val_accuracy": 0.5}, step=1)
    loggers.log({"train_loss": 0.75, "val_accuracy": 0.75}, step=2)
    folder = loggers.close(str(tmp_path / "logs"), "run-1", "train_model")
    assert folder is not None
    copied = tmp_path / "logs" / "run-1" / "train_model"
    rows = read_csv_metrics(copied / "metrics.csv")
    assert [(r["step"], r["metric"], r["value"]) for r in rows] == [
        (1, "train_loss", 1.5),
        (1, "val_accuracy", 0.5),
        (2, "train_loss", 0.75),
        (2, "val_accuracy", 0.75),
    ]
    assert tensorboard_scalars(copied) == {"train_loss": [(1, 1.5), (2, 0.75)], "val_accuracy": [(1, 0.5), (2, 0.75)]}


def test_no_logger_writes_nothing() -> None:
    loggers = StepLoggers([])
    loggers.log({"x": 1.0})
    assert loggers.close("/nonexistent", "run", "step") is None


def _plan(tmp_path: Path, tracking_section: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "loggers",
        "data": {"source": str(tmp_path / "data"), "format": "image_folder"},
        "model": {"architecture": "resnet18"},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", **tracking_section},
    }


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"log_uri": "s3://logs"}, r"tracking: .*log_uri: no logger writes there"),
        ({"loggers": ["csv", "csv"]}, r"tracking.loggers: .*name each logger once"),
        ({"loggers": ["wandb"]}, r"tracking.loggers.0: "),
    ],
)
def test_a_log_uri_without_a_logger_and_unknown_or_repeated_loggers_are_refused(
    tmp_path: Path, section: dict[str, Any], message: str
) -> None:
    with pytest.raises(PlanError, match=message):
        validate_plan(_plan(tmp_path, section))


def test_a_step_logs_to_mlflow_and_to_the_log_uri_even_when_it_fails(tmp_path: Path) -> None:
    plan_dict = _plan(tmp_path, {"loggers": ["csv", "tensorboard"], "log_uri": str(tmp_path / "logs")})
    plan = validate_plan(plan_dict)
    parent = tracking.open_pipeline_run(plan, "key-1", "test")
    with pipeline_step("train_model", plan_dict, parent) as step:
        step.log_metrics({"val_accuracy": 0.5}, 1)
        step.record({"test_accuracy": 0.9}, {})
        run_id = step.run_id
    failed: list[str] = []

    def fail_after_logging() -> None:
        with pipeline_step("evaluate_model", plan_dict, parent) as failing:
            failing.log_metrics({"val_accuracy": 0.25}, 3)
            failed.append(failing.run_id)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_after_logging()

    client = MlflowClient(tracking_uri=plan.tracking.uri)
    logged = {item.path for item in client.list_artifacts(run_id, "logs")}
    assert {"logs/metrics.csv", "logs/tensorboard"} <= logged
    rows = read_csv_metrics(tmp_path / "logs" / parent / "train_model" / "metrics.csv")
    assert {(r["metric"], r["value"]) for r in rows} == {("val_accuracy", 0.5), ("test_accuracy", 0.9)}
    kept = read_csv_metrics(tmp_path / "logs" / parent / "evaluate_model" / "metrics.csv")
    assert [(r["step"], r["value"]) for r in kept] == [(3, 0.25)]
    assert client.get_run(failed[0]).info.status == "FAILED"


def test_rooivalk_run_keeps_the_logs_in_its_run_folder_unless_the_plan_names_a_place(tmp_path: Path) -> None:
    from rooivalk.cli.local_run import resolve_plan

    with_loggers = validate_plan(_plan(tmp_path, {"loggers": ["csv"]}))
    assert resolve_plan(with_loggers, tmp_path / "out").tracking.log_uri == str((tmp_path / "out" / "logs").resolve())
    named = validate_plan(_plan(tmp_path, {"loggers": ["csv"], "log_uri": "s3://logs/x"}))
    assert resolve_plan(named, tmp_path / "out").tracking.log_uri == "s3://logs/x"
    assert resolve_plan(validate_plan(_plan(tmp_path, {})), tmp_path / "out").tracking.log_uri is None
