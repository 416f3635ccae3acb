"""Soft-voting ensembles: combining, fitting weights on validation, scoring members against the ensemble."""

from __future__ import annotations

import numpy as np
import pytest

from rooivalk.evaluation.ensemble import (
    ENSEMBLE,
    combine,
    fit_weights,
    log_loss,
    render_ensemble_markdown,
    score_ensemble,
)

CLASSES = ["civil", "hobby", "hostile"]


def _probabilities(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64)


def _members(rows: int = 400, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """An informative member (true class >= 0.7), a pure-noise one, and a weaker informative one."""
    generator = np.random.default_rng(seed)
    labels = generator.integers(0, 3, rows)
    informative = generator.dirichlet([1.0, 1.0, 1.0], rows) * 0.3
    informative[np.arange(rows), labels] += 0.7
    noise = generator.dirichlet([1.0, 1.0, 1.0], rows)
    weak = generator.dirichlet([2.0, 2.0, 2.0], rows) * 0.6
    weak[np.arange(rows), labels] += 0.4
    return {"xgboost": informative, "noise": noise, "mlp": weak}, labels


def test_combine_is_the_weighted_average() -> None:
    first = _probabilities([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    second = _probabilities([[0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    mixed = combine({"xgboost": first, "mlp": second}, {"xgboost": 0.6, "mlp": 0.4})
    expected = [[0.6 * 0.6 + 0.4 * 0.2, 0.6 * 0.3 + 0.4 * 0.2, 0.6 * 0.1 + 0.4 * 0.6], [0.32, 0.28, 0.40]]
    np.testing.assert_allclose(mixed, expected)
    # Weights are normalized: 3 and 2 are 0.6 and 0.4.
    np.testing.assert_allclose(combine({"xgboost": first, "mlp": second}, {"xgboost": 3, "mlp": 2}), expected)
    np.testing.assert_allclose(combine({"xgboost": first, "mlp": second}, {"xgboost": 1, "mlp": 0}), first)


def test_fitted_weights_prefer_the_informative_member() -> None:
    probabilities, labels = _members()
    weights = fit_weights(probabilities, labels)
    assert list(weights) == ["xgboost", "noise", "mlp"]
    assert sum(weights.values()) == pytest.approx(1.0)
    assert min(weights.values()) >= 0.0
    # The informative member dominates the others on every row: they add nothing to it.
    assert weights == {"xgboost": 1.0, "noise": 0.0, "mlp": 0.0}
    fitted = log_loss(combine(probabilities, weights), labels)
    assert fitted <= min(log_loss(p, labels) for p in probabilities.values())
    assert fitted < log_loss(combine(probabilities, dict.fromkeys(probabilities, 1.0)), labels)
    assert fit_weights(probabilities, labels) == weights  # deterministic


def test_complementary_members_share_the_weight_and_beat_each_alone() -> None:
    # Each member knows half of the rows (true class 0.8) and is uniform on the other half.
    labels = np.arange(200) % 3
    knows_first, knows_second = np.full((200, 3), 1 / 3), np.full((200, 3), 1 / 3)
    for member, rows in ((knows_first, slice(0, 120)), (knows_second, slice(120, 200))):
        member[rows] = 0.1
        member[np.arange(200)[rows], labels[rows]] = 0.8
    probabilities = {"first": knows_first, "second": knows_second}
    weights = fit_weights(probabilities, labels)
    # d/dw of 0.6 log(0.8w + (1-w)/3) + 0.4 log(w/3 + 0.8(1-w)) is zero at w = 26/35.
    assert weights["first"] == pytest.approx(26 / 35, abs=1e-4)
    fitted = log_loss(combine(probabilities, weights), labels)
    assert fitted < min(log_loss(p, labels) for p in probabilities.values()) - 0.02
    assert fitted <= log_loss(combine(probabilities, {"first": 1, "second": 1}), labels)


def test_fit_weights_over_chosen_members_gives_the_others_zero() -> None:
    probabilities, labels = _members()
    weights = fit_weights(probabilities, labels, members=["noise", "mlp"])
    assert weights["xgboost"] == 0.0
    assert weights["mlp"] > weights["noise"]
    assert fit_weights({"mlp": probabilities["mlp"]}, labels) == {"mlp": 1.0}
    with pytest.raises(ValueError, match="'catboost'"):
        fit_weights(probabilities, labels, members=["mlp", "catboost"])


@pytest.mark.parametrize(
    ("weights", "named"),
    [
        ({"xgboost": 0.6, "mlp": 0.3, "lightgbm": 0.1}, "lightgbm"),
        ({"xgboost": 0.6, "mlp": -0.4}, "mlp"),
        ({"xgboost": 0.0, "mlp": 0.0}, "xgboost"),
        ({"xgboost": 1.0}, "mlp"),
        ({"xgboost": float("nan"), "mlp": 1.0}, "xgboost"),
    ],
)
def test_bad_weights_are_refused_naming_the_member(weights: dict[str, float], named: str) -> None:
    probabilities, _ = _members(rows=10)
    del probabilities["noise"]
    with pytest.raises(ValueError, match=named):
        combine(probabilities, weights)


def test_bad_probabilities_are_refused_naming_the_member() -> None:
    probabilities, labels = _members(rows=10)
    with pytest.raises(ValueError, match="'mlp'.*sum to 1"):
        combine({**probabilities, "mlp": probabilities["mlp"] * 5}, dict.fromkeys(probabilities, 1.0))
    with pytest.raises(ValueError, match="'mlp'.*shape"):
        combine({**probabilities, "mlp": probabilities["mlp"][:5]}, dict.fromkeys(probabilities, 1.0))
    with pytest.raises(ValueError, match="labels"):
        fit_weights(probabilities, labels + 3)


def test_report_scores_every_member_and_the_ensemble() -> None:
    validation, val_labels = _members(seed=1)
    test, test_labels = _members(seed=2)
    weights = fit_weights(validation, val_labels)
    report = score_ensemble(test, test_labels, weights, CLASSES)
    assert [score.name for score in report.scores] == ["xgboost", "noise", "mlp", ENSEMBLE]
    assert report.ensemble.weight is None
    assert [score.weight for score in report.scores[:-1]] == pytest.approx(list(weights.values()))
    assert report.best in {"xgboost", ENSEMBLE}
    best = min(report.scores, key=lambda score: score.log_loss)
    assert report.best == best.name
    assert report.scores[1].metrics["accuracy"] < 0.5 < report.scores[0].metrics["accuracy"]
    assert set(report.scores[0].metrics["per_class"]) == set(CLASSES)
    by_accuracy = score_ensemble(test, test_labels, weights, CLASSES, criterion="accuracy")
    assert by_accuracy.best == max(by_accuracy.scores, key=lambda score: score.metrics["accuracy"]).name
    data = report.to_dict()
    assert set(data["scores"]) == {"xgboost", "noise", "mlp", ENSEMBLE}
    assert data["best"] == report.best
    table = render_ensemble_markdown(report)
    lines = table.splitlines()
    assert lines[0].startswith("| model | weight | log-loss")
    assert [line.split("|")[1].strip() for line in lines[2:6]] == ["xgboost", "noise", "mlp", ENSEMBLE]
    assert f"Best by log-loss: {report.best}." in table
    with pytest.raises(ValueError, match="class names"):
        score_ensemble(test, test_labels, weights, CLASSES[:2])


def test_given_weights_are_scored_as_given() -> None:
    first = _probabilities([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
    second = _probabilities([[0.4, 0.3, 0.3], [0.3, 0.3, 0.4]])
    report = score_ensemble({"xgboost": first, "mlp": second}, np.array([0, 1]), {"xgboost": 6, "mlp": 4}, CLASSES)
    assert report.weights == pytest.approx({"xgboost": 0.6, "mlp": 0.4})
    assert report.scores[-1].log_loss == pytest.approx(-np.log([0.7, 0.6]).mean())
    assert report.best == "xgboost"
