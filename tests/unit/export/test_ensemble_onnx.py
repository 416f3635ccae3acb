"""One ONNX graph for a table plan's ensemble (rooivalk.export.ensemble_onnx.merge_ensemble): the mlp's
graph and the XGBoost graph share the input "input", and the "logits" output is the log of the weighted
probabilities, so softmax(logits) = w_model * softmax(mlp) + w_xgboost * xgboost's probabilities, for
three classes (multi:softprob) and two (binary:logistic)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from scipy.special import softmax

from rooivalk.export.ensemble_onnx import merge_ensemble
from rooivalk.export.onnx_export import INPUT_NAME, OUTPUT_NAME, export_module
from rooivalk.export.xgboost_onnx import export_xgboost_onnx
from rooivalk.models.mlp import TabularMLP, build_mlp
from rooivalk.training.xgboost_training import XGBoostSettings, predict_probabilities, train_xgboost

FEATURES = 6
WEIGHTS = {"model": 0.3, "xgboost": 0.7}


def separable(classes: int, rows: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Feature 0 carries the class, plus noise; the rest is noise."""
    generator = np.random.default_rng(seed)
    y = generator.integers(0, classes, rows)
    x = generator.normal(size=(rows, FEATURES)).astype(np.float32)
    x[:, 0] += 2.0 * y
    return x, y


Members = tuple[TabularMLP, Any, Path, Path, np.ndarray]


def train_members(classes: int, folder: Path) -> Members:
    """(mlp, booster, mlp.onnx, xgboost.onnx, rows) of two small members trained on the same rows."""
    x, y = separable(classes)
    torch.manual_seed(0)
    mlp = build_mlp(FEATURES, classes, hidden=(8, 4))
    mlp.train()(torch.from_numpy(x))  # batch statistics, so BatchNorm is not the identity in eval mode
    mlp.eval()
    mlp_path = export_module(mlp, (torch.zeros(2, FEATURES),), [INPUT_NAME], [OUTPUT_NAME], folder / "mlp.onnx")
    settings = XGBoostSettings(n_estimators=5, max_depth=3, n_jobs=1)
    booster = train_xgboost(x[:150], y[:150], x[150:], y[150:], classes, settings).model
    trees_path = export_xgboost_onnx(booster, folder / "xgboost.onnx", FEATURES)
    return mlp, booster, mlp_path, trees_path, x


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Members]:
    """The members of a class count, trained and exported once per module (the exports take a second)."""
    built: dict[int, Members] = {}

    def get(classes: int) -> Members:
        if classes not in built:
            built[classes] = train_members(classes, tmp_path_factory.mktemp(f"members{classes}"))
        return built[classes]

    return get


def run(path: Path, rows: np.ndarray, output: str = OUTPUT_NAME) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run([output], {INPUT_NAME: rows})[0])


def mlp_probabilities(mlp: TabularMLP, rows: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        logits = mlp(torch.from_numpy(rows)).numpy().astype(np.float64)
    return np.asarray(softmax(logits, axis=1))


@pytest.mark.parametrize("classes", [3, 2])
def test_the_merged_graph_gives_the_weighted_probabilities(
    classes: int, members: Callable[[int], Members], tmp_path: Path
) -> None:
    mlp, booster, mlp_path, trees_path, rows = members(classes)
    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    assert objective == ("binary:logistic" if classes == 2 else "multi:softprob")
    merged = merge_ensemble(mlp_path, trees_path, WEIGHTS, tmp_path / "out" / "ensemble.onnx")
    assert merged == tmp_path / "out" / "ensemble.onnx"
    assert [p.name for p in merged.parent.iterdir()] == ["ensemble.onnx"]  # written atomically, nothing left over
    session = ort.InferenceSession(str(merged), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]  # one shared input
    assert [o.name for o in session.get_outputs()] == [OUTPUT_NAME]
    assert session.get_outputs()[0].shape[1] == classes
    logits = run(merged, rows)
    assert logits.shape == (len(rows), classes)
    assert logits.dtype == np.float32
    xgboost = predict_probabilities(booster, rows)
    mlp_p = mlp_probabilities(mlp, rows)
    want = WEIGHTS["model"] * mlp_p + WEIGHTS["xgboost"] * xgboost
    np.testing.assert_allclose(softmax(logits.astype(np.float64), axis=1), want, atol=1e-5, rtol=0)
    # The log of probabilities that sum to 1: softmax gives them back, exp alone does too.
    np.testing.assert_allclose(np.exp(logits.astype(np.float64)).sum(1), 1.0, atol=1e-5)
    # Against the members' own graphs, exactly what was merged.
    from_graphs = WEIGHTS["model"] * softmax(run(mlp_path, rows), axis=1) + WEIGHTS["xgboost"] * run(
        trees_path, rows, "probabilities"
    )
    np.testing.assert_allclose(np.exp(logits), from_graphs, atol=1e-6, rtol=0)
    # Neither member alone: the ensemble really weighs both.
    assert np.abs(want - xgboost).max() > 1e-2
    assert np.abs(want - mlp_p).max() > 1e-2
    for batch in (1, 7):  # a dynamic batch
        np.testing.assert_allclose(run(merged, rows[:batch]), logits[:batch], atol=1e-6)


@pytest.mark.parametrize(
    ("weights", "member"), [({"model": 1.0, "xgboost": 0.0}, "model"), ({"model": 0.0, "xgboost": 1.0}, "xgboost")]
)
def test_a_weight_of_one_gives_that_member_alone(
    weights: dict[str, float], member: str, members: Callable[[int], Members], tmp_path: Path
) -> None:
    mlp, booster, mlp_path, trees_path, rows = members(3)
    merged = merge_ensemble(mlp_path, trees_path, weights, tmp_path / "ensemble.onnx")
    have = softmax(run(merged, rows).astype(np.float64), axis=1)
    want = mlp_probabilities(mlp, rows) if member == "model" else predict_probabilities(booster, rows)
    np.testing.assert_allclose(have, want, atol=1e-5, rtol=0)


def test_a_zero_probability_is_floored_not_minus_infinity(members: Callable[[int], Members], tmp_path: Path) -> None:
    _, _, mlp_path, trees_path, rows = members(3)
    merged = merge_ensemble(mlp_path, trees_path, {"model": 0.0, "xgboost": 0.0}, tmp_path / "ensemble.onnx")
    logits = run(merged, rows[:4])
    assert np.isfinite(logits).all()
    np.testing.assert_allclose(logits, np.log(np.float32(1e-12)), rtol=1e-6)


def test_member_names_are_prefixed_so_they_cannot_clash(members: Callable[[int], Members], tmp_path: Path) -> None:
    _, _, mlp_path, trees_path, _ = members(3)
    merged = onnx.load(str(merge_ensemble(mlp_path, trees_path, WEIGHTS, tmp_path / "ensemble.onnx")))
    onnx.checker.check_model(merged)
    nodes = [node.name for node in merged.graph.node]
    assert len(nodes) == len(set(nodes))
    assert {name.split("/", 1)[0] for name in nodes} == {"model", "xgboost", "ensemble"}
    initializers = [init.name for init in merged.graph.initializer]
    assert len(initializers) == len(set(initializers))
    assert all(name.split("/", 1)[0] in ("model", "xgboost", "ensemble") for name in initializers)
    domains = {opset.domain for opset in merged.opset_import}
    assert "ai.onnx.ml" in domains  # the tree ensemble's domain came along
