"""The `search:` section: its space, sampler and objective validated, each searched key checked against the
plan it searches (rooivalk.plan.search, rooivalk.plan.loading)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from rooivalk.plan import ParameterSpec, PlanError, SearchSpec, validate_plan


def _plan(**search: Any) -> dict[str, Any]:
    return {
        "name": "searched",
        "data": {"source": "unused.parquet", "format": "sequences", "label": "label", "sequence": {"length": 16}},
        "model": {"family": "rnn", "architecture": "gru-16x1"},
        "training": {
            "stages": [{"name": "main", "epochs": 2, "train": ["all"], "lr": {"head": 1e-3, "backbone": 1e-3}}]
        },
        "search": {"space": {"model.drop_rate": {"low": 0.0, "high": 0.5}}, **search},
    }


def _problems(raw: dict[str, Any]) -> str:
    with pytest.raises(PlanError) as error:
        validate_plan(copy.deepcopy(raw), origin="plan.yaml")
    return str(error.value)


def test_a_search_plan_validates_and_ranges_keep_their_kind() -> None:
    plan = validate_plan(_plan(sampler="tpe", trials=12), origin="plan.yaml")
    assert plan.search is not None
    assert plan.search.objective.resolved_direction == "maximize"
    assert ParameterSpec(low=32, high=256, step=32).integer
    assert not ParameterSpec(low=0, high=0.5).integer  # 0 and 0.5: a real range
    assert ParameterSpec(low=32, high=128, step=32).grid() == [32, 64, 96, 128]
    assert (
        SearchSpec.model_validate(
            {"space": {"a": {"choices": [1]}}, "objective": {"metric": "val_loss"}}
        ).objective.resolved_direction
        == "minimize"
    )


@pytest.mark.parametrize(
    ("parameter", "message"),
    [
        ({"low": 0.5, "high": 0.1}, "low < high"),
        ({"low": 0.0, "high": 1.0, "log": True}, "log range needs low > 0"),
        ({"choices": [1], "low": 0.0, "high": 1.0}, "either choices or low and high"),
        ({"choices": [[1, 2]]}, "choices must be numbers, strings"),
        ({"choices": [1], "step": 1}, "apply to a range"),
    ],
)
def test_a_bad_parameter_is_refused_with_its_reason(parameter: dict[str, Any], message: str) -> None:
    assert message in _problems(_plan(space={"model.drop_rate": parameter}))


def test_grid_needs_a_step_or_choices_for_every_key() -> None:
    assert "sampler grid needs choices or a step" in _problems(_plan(sampler="grid"))
    validate_plan(_plan(sampler="grid", space={"model.drop_rate": {"low": 0.0, "high": 0.5, "step": 0.25}}))


def test_each_searched_key_must_exist_take_its_values_and_not_be_fixed() -> None:
    unknown = _problems(_plan(space={"model.dropout": {"low": 0.0, "high": 0.5}}))
    assert "search.space.model.dropout" in unknown
    too_high = _problems(_plan(space={"model.drop_rate": {"choices": [0.2, 1.5]}}))
    assert "search.space.model.drop_rate: 1.5" in too_high  # drop_rate < 1: the plan refuses it
    fixed = _problems(_plan(space={"data.sequence.length": {"choices": [8, 16]}}))
    assert "search.space.data.sequence.length: trials only train, on data ingested once" in fixed
    stage = validate_plan(_plan(space={"training.stages.0.lr.head": {"low": 1e-4, "high": 1e-2, "log": True}}))
    assert stage.search is not None


def test_keys_trials_would_not_honour_are_refused_with_their_paths() -> None:
    for path in ("export.max_accuracy_drop", "training.checkpoint.every_epochs", "evaluation.fail_on_gate"):
        assert f"search.space.{path}: trials only train" in _problems(_plan(space={path: {"choices": [1]}}))
    raw = _plan(pruner={"kind": "none", "startup_trials": 3})
    assert "search.pruner.startup_trials: applies to kind median" in _problems(raw)
    raw = _plan()
    raw["training"]["distributed"] = {"nproc_per_node": 2}
    assert "search: distributed (DDP) trials" in _problems(raw)
    raw = _plan(epoch_budget=40)
    raw["evaluation"] = {"cross_validation": {"folds": 3}}
    assert "search.epoch_budget: a cross-validated trial reports per fold" in _problems(raw)


def test_a_password_in_the_storage_url_is_refused_and_hidden_from_reports() -> None:
    from rooivalk.plan.search import hide_password

    refused = _problems(_plan(storage="postgresql+psycopg://optuna:hunter2@db:5432/optuna"))
    assert "search.storage: holds a password" in refused
    assert "hunter2" not in refused.replace("optuna:hunter2@db", "")  # only the given URL itself names it
    validate_plan(_plan(storage="postgresql+psycopg://optuna@db:5432/optuna"))
    assert "hunter2" not in hide_password("postgresql+psycopg://optuna:hunter2@db:5432/optuna")


def test_the_objective_defaults_to_what_early_stopping_monitors() -> None:
    raw = _plan()
    raw["training"]["early_stopping"] = {"enabled": True, "monitor": "val_loss", "mode": "min"}
    plan = validate_plan(raw)
    assert plan.search is not None
    assert (plan.search.objective.name, plan.search.objective.resolved_direction) == ("val_loss", "minimize")


def test_a_trials_values_are_set_as_they_are_even_on_a_pipeline_parameter_with_nulls() -> None:
    from rooivalk.search.trials import trial_raw_plan

    raw = _plan(space={"training.grad_clip_norm": {"low": 1e-05, "high": 1.0, "log": True}})
    raw["training"]["grad_clip_norm"] = None
    parameter = validate_plan(raw).to_parameter()  # what pipeline pods get: nulls listed under _nulls
    trial = validate_plan(trial_raw_plan(parameter, {"training.grad_clip_norm": 1e-05}))
    assert trial.training.grad_clip_norm == 1e-05  # a float, not the string YAML would read '1e-05' as
    assert trial.search is None
