"""`rooivalk search` on a tiny sequence plan: trials through the engine, pruning, MLflow runs nested under
the search's run, the best plan written out and runnable, the grid covered once (rooivalk.search)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from rooivalk.plan import PlanError, validate_plan
from rooivalk.search import run_search


def tiny_search_plan(tmp_path: Path, **search: Any) -> dict[str, Any]:
    return {
        "name": "tiny-search",
        "data": {
            "source": str(tmp_path / "signs.parquet"),
            "format": "sequences",
            "simulate": {"kind": "sign_language", "count": 300, "seed": 0, "num_classes": 6},
            "label": "label",
            "sequence": {"length": 16},
            "split": {"train": 0.6, "val": 0.2, "test": 0.2, "seed": 0},
        },
        "model": {"family": "rnn", "architecture": "gru-16x1"},
        "training": {
            "batch_size": 32,
            "threads": 1,
            "stages": [{"name": "main", "epochs": 3, "train": ["all"], "lr": {"head": 1e-3, "backbone": 1e-3}}],
        },
        "search": {
            "space": {
                "model.architecture": {"choices": ["gru-16x1", "lstm-32x1"]},
                "training.stages.0.lr.head": {"low": 1e-4, "high": 3e-2, "log": True},
            },
            "sampler": "random",
            "trials": 5,
            **search,
        },
    }


def _runs(tracking_uri: str) -> tuple[Any, list[Any]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (parent,) = client.search_runs(experiments, "tags.rooivalk.search_study = 'tiny-search'")
    children = client.search_runs(experiments, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return parent, children


def test_a_search_trains_tracks_prunes_and_writes_a_runnable_best_plan(tmp_path: Path) -> None:
    raw = tiny_search_plan(tmp_path, pruner={"kind": "median", "warmup_epochs": 1, "startup_trials": 1})
    out = tmp_path / "search"
    lines: list[str] = []
    report = run_search(raw, "plan.yaml", out, say=lines.append)
    assert [trial["number"] for trial in report.trials] == [0, 1, 2, 3, 4]
    assert {trial["state"] for trial in report.trials} <= {"complete", "pruned"}
    assert report.trials[0]["state"] == "complete"  # the pruner's startup trial runs in full
    assert all(1 <= trial["epochs"] <= 3 for trial in report.trials)
    pruned = [trial for trial in report.trials if trial["state"] == "pruned"]
    assert all(trial["epochs"] < 3 for trial in pruned)  # stopped early, at its last reported epoch
    complete = [trial for trial in report.trials if trial["state"] == "complete"]
    assert report.best is not None
    assert report.best["value"] == max(trial["value"] for trial in complete)
    assert any("ingesting" in line for line in lines)

    saved = json.loads((out / "search.json").read_text())
    assert saved["best"] == report.best
    assert saved["counts"] == report.counts()
    assert (out / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = yaml.safe_load((out / "best_plan.yaml").read_text())
    assert "search" not in best
    plan = validate_plan(best, origin="best_plan.yaml")  # runnable as is
    assert plan.single_model.architecture == report.best["params"]["model.architecture"]
    assert plan.training.stages[0].lr.head == pytest.approx(report.best["params"]["training.stages.0.lr.head"])

    parent, children = _runs(f"sqlite:///{out / 'mlflow.db'}")
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(report.best["value"])
    assert sorted(int(run.data.tags["rooivalk.search_trial"]) for run in children) == [0, 1, 2, 3, 4]
    for run in children:
        assert set(run.data.params) == {"model.architecture", "training.stages.0.lr.head"}
        state = report.trials[int(run.data.tags["rooivalk.search_trial"])]["state"]
        assert run.info.status == ("FINISHED" if state == "complete" else "KILLED")
        assert "val_accuracy" in run.data.metrics

    # The same study again: it continues (trials 5, 6), its sampler seeded apart from the first call's.
    again = run_search(raw, "plan.yaml", out, trials=2)
    assert [trial["number"] for trial in again.trials] == [0, 1, 2, 3, 4, 5, 6]
    params = [json.dumps(trial["params"], sort_keys=True) for trial in again.trials]
    assert len(set(params)) == len(params)


def test_grid_covers_each_point_once_and_a_refused_combination_fails_only_its_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rooivalk.search.trials as trials_module

    raw = tiny_search_plan(
        tmp_path,
        sampler="grid",
        trials=50,  # more than the grid: capped at its 4 points
        space={
            "model.architecture": {"choices": ["gru-16x1", "lstm-32x1"]},
            "model.drop_rate": {"low": 0.0, "high": 0.2, "step": 0.2},
        },
    )
    raw["training"]["stages"][0]["epochs"] = 1
    real = trials_module.validate_plan

    def refuse_one(plan: dict[str, Any], origin: str = "<plan>", resolver: Any = None) -> Any:
        # Stands in for a combination the plan refuses (each value alone is valid, as the space check
        # requires): the trial must fail with the refusal, and the others run.
        if plan["model"]["architecture"] == "lstm-32x1" and plan["model"]["drop_rate"] == 0.2:
            raise PlanError(f"{origin}: model.drop_rate: refused with lstm-32x1 (test)")
        return real(plan, origin, resolver)

    monkeypatch.setattr(trials_module, "validate_plan", refuse_one)
    report = run_search(raw, "plan.yaml", tmp_path / "grid")
    points = sorted((t["params"]["model.architecture"], t["params"]["model.drop_rate"]) for t in report.trials)
    assert points == [("gru-16x1", 0.0), ("gru-16x1", 0.2), ("lstm-32x1", 0.0), ("lstm-32x1", 0.2)]
    (failed,) = [t for t in report.trials if t["state"] == "fail"]
    assert "refused with lstm-32x1" in failed["error"]
    assert failed["params"] == {"model.architecture": "lstm-32x1", "model.drop_rate": 0.2}


def test_an_objective_the_model_does_not_report_stops_the_search_naming_its_figures(tmp_path: Path) -> None:
    raw = tiny_search_plan(tmp_path, trials=1, objective={"metric": "val_map50"})
    with pytest.raises(ValueError, match=r"'val_map50' is not a per-epoch figure of this model: \[.*val_accuracy"):
        run_search(raw, "plan.yaml", tmp_path / "bad")
    with pytest.raises(PlanError, match="no search section"):
        run_search({k: v for k, v in raw.items() if k != "search"}, "plan.yaml", tmp_path / "none")


def _fake_training(fail: Callable[[int], BaseException | None]) -> Callable[..., Any]:
    """Stands in for rooivalk.training.trainer.train_model (the engine's own failures are tested with it):
    three epoch_end events, unless `fail(call)` gives the error the engine would raise on that call."""
    calls: list[int] = []

    def train_model(plan: Any, dataset_dir: str, model_dir: str, progress: Any = None, **_: Any) -> None:
        calls.append(len(calls))
        error = fail(calls[-1])
        if error is not None:
            raise error
        for epoch in (1, 2, 3):
            progress(
                {"event": "epoch_end", "epoch": epoch, "val_accuracy": 0.1 * epoch + plan.training.stages[0].lr.head}
            )

    return train_model


def test_a_preempted_trial_is_queued_again_with_its_values_and_a_failing_one_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    import rooivalk.training.trainer as trainer
    from rooivalk.training.engine.errors import Preempted, TrainingError

    raw = tiny_search_plan(tmp_path, trials=2, pruner={"kind": "none"})
    monkeypatch.setattr(
        trainer, "train_model", _fake_training(lambda call: Preempted("SIGTERM") if call == 0 else None)
    )
    with pytest.raises(Preempted):
        run_search(raw, "plan.yaml", tmp_path / "s")  # the worker stops: its pod is going away
    study = optuna.load_study(study_name="tiny-search", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    first, queued = study.trials
    assert first.state == optuna.trial.TrialState.FAIL
    assert queued.state == optuna.trial.TrialState.WAITING
    assert queued.system_attrs["fixed_params"] == first.params  # the same values, run first when the worker returns
    assert queued.user_attrs["retry_of"] == 0
    # The rerun (the retried pod) runs the queued values first, then the rest of its share.
    report = run_search(raw, "plan.yaml", tmp_path / "s", trials=2)
    assert [t["state"] for t in report.trials] == ["fail", "complete", "complete"]
    assert report.trials[1]["params"] == report.trials[0]["params"]

    def diverge(call: int) -> BaseException | None:
        return TrainingError("non-finite loss at epoch 1") if call == 1 else None

    monkeypatch.setattr(trainer, "train_model", _fake_training(diverge))
    report = run_search(raw, "plan.yaml", tmp_path / "d", trials=3)
    assert [t["state"] for t in report.trials] == ["complete", "fail", "complete"]
    assert "TrainingError: non-finite loss" in report.trials[1]["error"]


def test_two_workers_on_a_grid_cover_every_point_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = tiny_search_plan(
        tmp_path,
        sampler="grid",
        workers=2,
        trials=50,  # capped at the grid's 6 points
        space={
            "model.architecture": {"choices": ["gru-16x1", "lstm-32x1"]},
            "model.drop_rate": {"low": 0.0, "high": 0.2, "step": 0.1},
        },
    )
    raw["training"]["stages"][0]["epochs"] = 1
    report = run_search(raw, "plan.yaml", tmp_path / "grid2")
    points = sorted(
        (t["params"]["model.architecture"], round(t["params"]["model.drop_rate"], 6)) for t in report.trials
    )
    assert points == sorted((a, d) for a in ("gru-16x1", "lstm-32x1") for d in (0.0, 0.1, 0.2))


def test_a_retried_worker_pod_requeues_what_its_killed_predecessor_left_running(tmp_path: Path) -> None:
    """What a hard-killed pod leaves: a RUNNING trial and its RUNNING MLflow run (made here by hand; the
    kill itself needs a pod)."""
    import optuna
    from mlflow.tracking import MlflowClient

    from rooivalk.search.runner import _requeue_and_count

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking)
    run_id = client.create_run(client.create_experiment("s")).info.run_id
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s", direction="maximize")
    done = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    done.set_user_attr("worker", 0)
    done.set_user_attr("run_key", "run-1")
    study.tell(done, 0.5)
    left = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    for key, value in {"worker": 0, "run_key": "run-1", "mlflow_run_id": run_id}.items():
        left.set_user_attr(key, value)
    other = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # another worker's: left alone
    other.set_user_attr("worker", 1)
    other.set_user_attr("run_key", "run-1")

    assert _requeue_and_count(study, 0, "run-1", tracking) == 1  # one of its share is done
    states = [t.state for t in study.trials]
    State = optuna.trial.TrialState  # noqa: N806
    assert states == [State.COMPLETE, State.FAIL, State.RUNNING, State.WAITING]
    queued = study.trials[3]
    assert queued.system_attrs["fixed_params"] == {"x": left.params["x"]}
    assert queued.user_attrs["retry_of"] == left.number
    assert client.get_run(run_id).info.status == "KILLED"
    assert _requeue_and_count(study, 0, "run-2", tracking) == 0  # another pipeline run's share starts afresh


def test_a_cross_validated_search_scores_each_trial_by_its_fold_mean(tmp_path: Path) -> None:
    raw = tiny_search_plan(tmp_path, trials=2, pruner={"kind": "none"})
    raw["evaluation"] = {"cross_validation": {"folds": 2}}
    raw["training"]["stages"][0]["epochs"] = 1
    out = tmp_path / "search"
    report = run_search(raw, "plan.yaml", out)
    assert report.best is not None
    for trial in report.trials:
        saved = json.loads((out / "trials" / f"{trial['number']:04d}" / "model" / "cross_validation.json").read_text())
        assert trial["value"] == pytest.approx(saved["summary"]["cv_accuracy_mean"])
    parent, _ = _runs(f"sqlite:///{out / 'mlflow.db'}")
    assert parent.data.metrics["best_cv_accuracy_mean"] == pytest.approx(report.best["value"])


def test_a_trial_with_qat_is_scored_by_its_qat_epochs_only(tmp_path: Path) -> None:
    raw = tiny_search_plan(tmp_path, trials=1, pruner={"kind": "none"})
    raw["training"]["qat"] = {"epochs": 1, "lr": 1e-4}
    raw["export"] = {"precisions": ["fp32", "int8_static"]}
    report = run_search(raw, "plan.yaml", tmp_path / "search")
    (trial,) = report.trials
    history = json.loads((tmp_path / "search" / "trials" / "0000" / "model" / "stages.json").read_text())
    assert [stage["stage"] for stage in history] == ["main", "qat"]
    assert trial["value"] == pytest.approx(history[-1]["best_val_accuracy"])


def test_an_epoch_budget_stops_starting_trials_once_the_study_trained_that_many_epochs(tmp_path: Path) -> None:
    raw = tiny_search_plan(tmp_path, trials=10, epoch_budget=5, pruner={"kind": "none"})
    raw["training"]["stages"][0]["epochs"] = 2
    out = tmp_path / "search"
    lines: list[str] = []
    report = run_search(raw, "plan.yaml", out, say=lines.append)
    # 2 + 2 epochs leave the budget unspent, the third trial spends it: no fourth of the ten trials starts.
    assert [trial["epochs"] for trial in report.trials] == [2, 2, 2]
    again = run_search(raw, "plan.yaml", out)  # the study continued: its budget is spent, nothing runs
    assert len(again.trials) == 3
