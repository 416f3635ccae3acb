"""A search's study shared by parallel worker processes in a real PostgreSQL (Debian's, started in the test's
folder by rooivalk._dev.servers.start_postgres): every trial runs exactly once, as Optuna and MLflow both
record it, and a second search on the same storage continues the study instead of repeating it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from rooivalk._dev.servers import start_postgres
from rooivalk.plan import validate_plan
from rooivalk.search import run_search
from rooivalk.tracking.runs import default_tracking_uri
from tests.unit.search.test_search import tiny_search_plan

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STUDY = "tiny-search"


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    server = start_postgres(tmp_path / "postgres", tmp_path / "postgres.log")
    try:
        yield server.url
    finally:
        server.stop()


def _plan(tmp_path: Path, storage: str, trials: int, workers: int) -> dict[str, Any]:
    """The unit tests' tiny sign-language search (~1 s a trial on one thread), on `storage`."""
    return tiny_search_plan(tmp_path, trials=trials, workers=workers, storage=storage, pruner={"kind": "none"})


def _check_trials(out: Path, url: str, count: int) -> None:
    """search.json and the study in PostgreSQL both hold trials 0..count-1, each once, complete, with
    parameters no other trial drew."""
    recorded = json.loads((out / "search.json").read_text())["trials"]
    study = optuna.load_study(study_name=STUDY, storage=url)
    for numbers, states, params in (
        ([t["number"] for t in recorded], [t["state"] for t in recorded], [t["params"] for t in recorded]),
        (
            [t.number for t in study.trials],
            [t.state.name.lower() for t in study.trials],
            [t.params for t in study.trials],
        ),
    ):
        assert sorted(numbers) == list(range(count)), numbers
        assert states == ["complete"] * count, states
        assert len({json.dumps(p, sort_keys=True) for p in params}) == count, params  # workers seeded apart
    assert validate_plan(yaml.safe_load((out / "best_plan.yaml").read_text()), "best_plan.yaml").search is None


def _nested_trials(client: MlflowClient) -> dict[str, list[int]]:
    """{search run id: the trial numbers of the runs nested under it}, oldest search first."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(
        experiments, f"tags.`rooivalk.search_study` = '{STUDY}'", order_by=["attributes.start_time ASC"]
    )
    nested = {}
    for parent in parents:
        children = client.search_runs(experiments, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        nested[parent.info.run_id] = sorted(int(run.data.tags["rooivalk.search_trial"]) for run in children)
    return nested


def test_parallel_workers_share_a_postgres_study_without_losing_or_repeating_a_trial(
    tmp_path: Path, postgres_url: str
) -> None:
    out = tmp_path / "search"
    plan = _plan(tmp_path, postgres_url, trials=6, workers=2)
    report = run_search(plan, "tiny-search.yaml", out)
    assert sorted(t["number"] for t in report.trials) == list(range(6))
    _check_trials(out, postgres_url, 6)
    client = MlflowClient(tracking_uri=default_tracking_uri(out))
    (first,) = _nested_trials(client).values()
    assert first == list(range(6))

    # The same study, two more trials (both workers again, one each): it continues at trial 6.
    report = run_search(plan, "tiny-search.yaml", out, trials=2)
    assert sorted(t["number"] for t in report.trials) == list(range(8))
    _check_trials(out, postgres_url, 8)
    assert list(_nested_trials(client).values()) == [list(range(6)), [6, 7]]


def test_missing_postgresql_fails_saying_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rooivalk._dev import servers

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(servers, "POSTGRES_LIB", tmp_path / "no-postgresql")
    with pytest.raises(RuntimeError, match=r"initdb and postgres .* `make postgres`"):
        servers.start_postgres(tmp_path / "postgres", tmp_path / "postgres.log")
    assert not (tmp_path / "postgres").exists()
