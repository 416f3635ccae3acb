"""XGBoost trained by xgboost itself: early stopping keeps the best rounds, one history row per round,
the engine's progress and metrics callbacks, determinism by seed, two classes, bad input, and the model
through MLflow's own xgboost flavor on a real sqlite store and back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import mlflow.xgboost
import numpy as np
import pytest

from rooivalk.training.xgboost_mlflow import log_xgboost_model
from rooivalk.training.xgboost_training import XGBoostSettings, predict_probabilities, train_xgboost

FEATURES = 6
# One thread: OpenMP threads spin-wait, so two per test on two shared cores can be 100x slower.
FAST = XGBoostSettings(n_jobs=1)


def separable(classes: int, rows: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Feature 0 carries the class (plus noise, so the validation loss bottoms out); the rest is noise."""
    generator = np.random.default_rng(seed)
    y = generator.integers(0, classes, rows)
    x = generator.normal(size=(rows, FEATURES)).astype(np.float32)
    x[:, 0] += 3.0 * y
    return x, y


def split(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return x[:300], y[:300], x[300:], y[300:]


def test_early_stopping_keeps_the_best_rounds() -> None:
    x, y = separable(3)
    result = train_xgboost(*split(x, y), num_classes=3, settings=FAST)
    losses = [row["val_loss"] for row in result.history]
    assert result.rounds < FAST.n_estimators
    assert result.rounds == result.best_iteration + 1 + 20  # stopped 20 rounds after the best
    assert result.best_iteration == int(np.argmin(losses))
    assert len(result.history) == result.rounds
    assert [row["epoch"] for row in result.history] == list(range(1, result.rounds + 1))
    assert result.model.num_boosted_rounds() == result.best_iteration + 1
    probabilities = predict_probabilities(result.model, x[300:])
    assert probabilities.shape == (100, 3)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    # The kept model is the best round's: its accuracy is the history's at best_iteration.
    accuracy = float((probabilities.argmax(1) == y[300:]).mean())
    assert (
        accuracy
        == pytest.approx(result.val_accuracy)
        == pytest.approx(result.history[result.best_iteration]["val_accuracy"])
    )
    assert result.val_accuracy > 0.8
    assert result.metrics["best_iteration"] == result.best_iteration


def test_callbacks_report_every_round_and_every_n_rounds() -> None:
    x, y = separable(3)
    logged: list[tuple[dict[str, float], int]] = []
    events: list[dict[str, Any]] = []
    settings = XGBoostSettings(n_jobs=1, progress_every=10)
    result = train_xgboost(
        *split(x, y),
        num_classes=3,
        settings=settings,
        progress=events.append,
        log_metrics=lambda m, s: logged.append((m, s)),
    )
    assert [step for _, step in logged] == list(range(1, result.rounds + 1))
    assert logged[0][0].keys() >= {"train_loss", "val_loss", "val_accuracy", "val_error", "epoch_seconds"}
    # every 10th round, plus the round early stopping ended on
    assert [e["epoch"] for e in events] == sorted({*range(10, result.rounds + 1, 10), result.rounds})
    last = events[-1]
    assert (last["event"], last["stage"], last["epochs"]) == ("epoch_end", "xgboost", 200)
    assert last["val_loss"] == result.history[-1]["val_loss"]
    assert last["improved"] is False  # early stopping ends 20 rounds past the best
    assert last["lr_at_epoch_end"] == 0.1


def test_the_same_seed_gives_the_same_model() -> None:
    x, y = separable(4, seed=1)
    sampled = XGBoostSettings(n_jobs=1, subsample=0.7, colsample_bytree=0.7, n_estimators=30, seed=3)
    first = train_xgboost(*split(x, y), num_classes=4, settings=sampled)
    second = train_xgboost(*split(x, y), num_classes=4, settings=sampled)
    other = train_xgboost(*split(x, y), num_classes=4, settings=replace(sampled, seed=4))
    np.testing.assert_array_equal(predict_probabilities(first.model, x), predict_probabilities(second.model, x))
    assert [r["val_loss"] for r in first.history] == [r["val_loss"] for r in second.history]
    assert [r["val_loss"] for r in first.history] != [r["val_loss"] for r in other.history]


def test_without_early_stopping_every_round_is_trained_and_the_best_kept() -> None:
    x, y = separable(3)
    settings = XGBoostSettings(n_jobs=1, n_estimators=15, early_stopping_rounds=None)
    result = train_xgboost(*split(x, y), num_classes=3, settings=settings)
    assert result.rounds == len(result.history) == 15
    assert result.model.num_boosted_rounds() == result.best_iteration + 1


def test_two_classes_give_two_probability_columns() -> None:
    x, y = separable(2)
    result = train_xgboost(*split(x, y), num_classes=2, settings=FAST)
    probabilities = predict_probabilities(result.model, x[300:])
    assert probabilities.shape == (100, 2)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-6)
    assert float((probabilities.argmax(1) == y[300:]).mean()) == pytest.approx(result.val_accuracy)


def test_bad_input_is_refused_before_training() -> None:
    x, y = separable(3)
    train_x, train_y, val_x, val_y = split(x, y)
    with pytest.raises(ValueError, match=r"val: labels must lie in \[0, 3\)"):
        train_xgboost(train_x, train_y, val_x, val_y + 1, num_classes=3, settings=FAST)
    with pytest.raises(ValueError, match="train has 6 features but val has 5"):
        train_xgboost(train_x, train_y, val_x[:, :5], val_y, num_classes=3, settings=FAST)
    with pytest.raises(ValueError, match="integer class indices"):
        train_xgboost(train_x, train_y.astype(float), val_x, val_y, num_classes=3, settings=FAST)
    with pytest.raises(ValueError, match="xgboost.subsample"):
        XGBoostSettings(subsample=0.0)
    with pytest.raises(ValueError, match="xgboost.early_stopping_rounds"):
        XGBoostSettings(early_stopping_rounds=0)


def test_the_xgboost_flavor_round_trips_the_model(tmp_path: Path) -> None:
    x, y = separable(3)
    result = train_xgboost(*split(x, y), num_classes=3, settings=FAST)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with pytest.raises(RuntimeError, match="needs an active MLflow run"):
            log_xgboost_model(result.model, "attribution")
        experiment = mlflow.create_experiment("xgboost", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = log_xgboost_model(result.model, "attribution", input_example=x[:3])
        loaded = mlflow.xgboost.load_model(info.model_uri)
        requirements = Path(mlflow.pyfunc.get_model_dependencies(info.model_uri)).read_text()
    finally:
        mlflow.set_tracking_uri(previous)
    assert "xgboost" in info.flavors
    assert info.signature is not None
    assert info.signature.inputs.to_dict()[0]["tensor-spec"] == {"dtype": "float32", "shape": (-1, FEATURES)}
    assert info.signature.outputs.to_dict()[0]["tensor-spec"] == {"dtype": "float32", "shape": (-1, 3)}
    assert "xgboost-cpu==" in requirements  # the CPU wheel, not the one that pulls NVIDIA NCCL
    np.testing.assert_array_equal(predict_probabilities(loaded, x), predict_probabilities(result.model, x))
