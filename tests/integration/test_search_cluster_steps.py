"""The search pipeline's steps (rooivalk.steps.search_steps, what the search_worker and search_report
components call) on a real PostgreSQL study: two worker "pods" as processes, a retried worker pod that
runs only what its share has left, the report. KFP itself cannot run here: the compiled pipeline is
checked by tests/pipelines (golden IR); these are the functions its pods run."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
import yaml

from rooivalk._dev.servers import start_postgres
from rooivalk.plan import validate_plan
from rooivalk.steps.search_steps import search_report, search_worker
from tests.unit.search.test_search import tiny_search_plan

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _open_parent(plan: dict[str, Any]) -> str:
    from rooivalk.tracking.runs import client_for

    client = client_for(plan["tracking"]["uri"])
    experiment = client.create_experiment("search-steps")
    return str(client.create_run(experiment, run_name="pipeline").info.run_id)


def test_worker_pods_share_the_study_a_retried_pod_adds_nothing_and_the_report_has_the_best(tmp_path: Path) -> None:
    from rooivalk.data import ingest_data

    server = start_postgres(tmp_path / "pg", tmp_path / "pg.log")
    try:
        raw = tiny_search_plan(tmp_path, trials=5, workers=2, storage=server.url)
        raw["training"]["stages"][0]["epochs"] = 2
        raw["training"]["checkpoint"] = {"uri": str(tmp_path / "checkpoints")}
        raw["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "search-steps"}
        plan = validate_plan(raw, origin="plan.yaml")
        dataset = str(tmp_path / "dataset")
        ingest_data(plan.data, dataset)
        parent = _open_parent(raw)
        spawn = multiprocessing.get_context("spawn")
        pods = [spawn.Process(target=search_worker, args=(raw, parent, dataset, worker, parent)) for worker in (0, 1)]
        for pod in pods:
            pod.start()
        for pod in pods:
            pod.join()
        assert [pod.exitcode for pod in pods] == [0, 0]
        assert search_worker(raw, parent, dataset, 0, parent) == {"trials": 0.0}  # a retried pod: its 3 ran
        assert search_worker(raw, parent, dataset, 1, "another-run") == {"trials": 2.0}  # a new pipeline run
        report = search_report(raw, parent, str(tmp_path / "report"))
        assert sorted(trial["number"] for trial in report.trials) == list(range(7))  # none lost, none twice
        assert report.best is not None
        best = yaml.safe_load((tmp_path / "report" / "best_plan.yaml").read_text())
        assert validate_plan(best, origin="best_plan.yaml").search is None
        assert json.loads((tmp_path / "report" / "search.json").read_text())["counts"] == report.counts()
        assert not any((tmp_path / "checkpoints").glob("search-tiny-search/trial-*/*"))  # removed when done
        with pytest.raises(ValueError, match="worker 2: the search has 2 workers"):
            search_worker(raw, parent, dataset, 2, parent)
    finally:
        server.stop()
