"""XGBoost to ONNX with onnxmltools: dynamic batch, the label and probabilities outputs, verified against
xgboost's own probabilities, written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import xgboost as xgb

from rooivalk.export.xgboost_onnx import (
    INPUT_NAME,
    OUTPUT_NAMES,
    XGBoostExportError,
    export_xgboost_onnx,
    verify_xgboost_onnx,
)
from rooivalk.training.xgboost_training import XGBoostResult, XGBoostSettings, train_xgboost

FEATURES = 6


def rows(classes: int, count: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    y = generator.integers(0, classes, count)
    x = generator.normal(size=(count, FEATURES)).astype(np.float32)
    x[:, 0] += 2.0 * y
    x[generator.random(x.shape) < 0.02] = np.nan  # missing values take each tree's default branch
    return x, y


def trained(classes: int) -> tuple[XGBoostResult, np.ndarray]:
    x, y = rows(classes)
    settings = XGBoostSettings(n_jobs=1, subsample=0.8, colsample_bytree=0.8)
    return train_xgboost(x[:300], y[:300], x[300:], y[300:], classes, settings), x


@pytest.mark.parametrize("classes", [2, 4])
def test_onnx_reproduces_xgboost_at_two_batch_sizes(classes: int, tmp_path: Path) -> None:
    result, x = trained(classes)
    path = export_xgboost_onnx(result.model, tmp_path / "nested" / "model.onnx", FEATURES)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert not isinstance(session.get_inputs()[0].shape[0], int)  # dynamic batch
    assert tuple(o.name for o in session.get_outputs()) == OUTPUT_NAMES == ("label", "probabilities")
    for batch in (1, 64):
        check = verify_xgboost_onnx(result.model, path, x, batch=batch)
        assert check.samples == len(x)
        assert check.max_abs_diff < 1e-5, (classes, batch, check)
        assert check.top1_agreement == 1.0
        assert check.label_agreement == 1.0
    label, probabilities = session.run(None, {INPUT_NAME: x[:5]})
    assert label.dtype == np.int64
    assert probabilities.shape == (5, classes)
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # no temporary file left behind


def test_the_scikit_learn_classifier_converts_too(tmp_path: Path) -> None:
    x, y = rows(3)
    classifier = xgb.XGBClassifier(n_estimators=10, max_depth=4, n_jobs=1, random_state=0).fit(x, y)
    path = export_xgboost_onnx(classifier, tmp_path / "model.onnx", FEATURES)
    check = verify_xgboost_onnx(classifier, path, x)
    assert check.max_abs_diff < 1e-5
    assert check.top1_agreement == 1.0


def test_a_one_round_binary_model_stays_a_classifier(tmp_path: Path) -> None:
    # Balanced classes and one round: every tree cover is a whole number, which a bare Booster handed
    # to onnxmltools turns into a regressor graph.
    y = np.tile(np.arange(2), 100)
    x = np.zeros((len(y), FEATURES), np.float32)
    x[:, 0] = y
    settings = XGBoostSettings(n_jobs=1, n_estimators=1, max_depth=2)
    result = train_xgboost(x, y, x, y, 2, settings)
    path = export_xgboost_onnx(result.model, tmp_path / "model.onnx", FEATURES)
    check = verify_xgboost_onnx(result.model, path, x)
    assert check.max_abs_diff < 1e-5
    assert check.label_agreement == 1.0


def test_a_regressor_or_a_wrong_feature_count_is_refused(tmp_path: Path) -> None:
    x, y = rows(3)
    regressor = xgb.XGBRegressor(n_estimators=3, n_jobs=1).fit(x, y)
    with pytest.raises(XGBoostExportError, match="not a classifier's"):
        export_xgboost_onnx(regressor, tmp_path / "model.onnx", FEATURES)
    classifier = xgb.XGBClassifier(n_estimators=3, n_jobs=1).fit(x, y)
    with pytest.raises(XGBoostExportError, match="takes 6 features, not 5"):
        export_xgboost_onnx(classifier, tmp_path / "model.onnx", FEATURES - 1)
    assert not list(tmp_path.iterdir())
