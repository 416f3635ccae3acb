"""The ingest step's record (rooivalk.steps.ingest_step): the card and the dataset's files in the step's
MLflow run (real, sqlite), the run tagged with the dataset version."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from rooivalk import tracking
from rooivalk.data import ingest_data
from rooivalk.data.dataset import INFO_FILE, QUARANTINE_FILE
from rooivalk.data.dataset_card import CARD_FILE, CARD_MARKDOWN_FILE
from rooivalk.data.ingest import BALANCE_PLOT_FILE
from rooivalk.plan import validate_plan
from rooivalk.steps import pipeline_step
from rooivalk.steps.ingest_step import INGEST_LOG_FILES, record_ingest
from rooivalk.tracking.promotion import DATASET_TAG
from tests.unit.data.test_table_dataset import table


def test_the_file_names_are_the_data_layers() -> None:
    assert set(INGEST_LOG_FILES) == {INFO_FILE, QUARANTINE_FILE, BALANCE_PLOT_FILE, CARD_FILE, CARD_MARKDOWN_FILE}


def test_the_ingest_run_holds_the_card_and_is_tagged_with_the_dataset_version(tmp_path: Path) -> None:
    table().to_csv(tmp_path / "rows.csv", index=False)
    split = {"train": 0.5, "val": 0.25, "test": 0.25}
    plan_dict = {
        "name": "card",
        "data": {"source": str(tmp_path / "rows.csv"), "format": "table", "split": split},
        "model": {"family": "mlp", "architecture": "8"},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }
    plan = validate_plan(plan_dict)
    parent = tracking.open_pipeline_run(plan, "key-1", "test")
    dataset_dir = str(tmp_path / "ds")
    with pipeline_step("ingest_data", plan_dict, parent) as step:
        result = ingest_data(step.plan.data, dataset_dir)
        record_ingest(step, result.metrics, result.info.version_id, dataset_dir, f"{dataset_dir}/{QUARANTINE_FILE}")
        run_id = step.run_id
    client = MlflowClient(tracking_uri=plan.tracking.uri)
    assert client.get_run(run_id).data.tags[DATASET_TAG] == result.info.version_id
    logged = {item.path for item in client.list_artifacts(run_id)}
    assert {CARD_FILE, CARD_MARKDOWN_FILE, INFO_FILE, QUARANTINE_FILE} <= logged
