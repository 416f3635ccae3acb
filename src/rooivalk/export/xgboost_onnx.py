"""ONNX export of a trained XGBoost classifier (rooivalk.training.xgboost_training), with a check
against xgboost's own probabilities.

Graph (onnxmltools' `convert_xgboost`: one ai.onnx.ml TreeEnsembleClassifier node, run by onnxruntime):
"input" float32 (batch, F) -> "label" int64 (batch,) the argmax class, and "probabilities" float32
(batch, K), plain tensors (no ZipMap). The batch is dynamic. Missing values are NaN, as in xgboost.
Two-class models must be binary:logistic (as train_xgboost makes them): ONNX Runtime reads a two-class
TreeEnsembleClassifier as a single margin, so a two-class softprob model would convert to wrong
probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from rooivalk.export._onnx_io import atomic_output
from rooivalk.training.xgboost_training import predict_probabilities

INPUT_NAME = "input"  # the name every rooivalk classifier graph takes its batch under
LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"
OUTPUT_NAMES = (LABEL_OUTPUT, PROBABILITIES_OUTPUT)


class XGBoostExportError(ValueError):
    """A model the converter cannot turn into the classifier graph above; the message says why."""


@dataclass(frozen=True)
class XGBoostVerification:
    """How closely an ONNX file reproduces xgboost's own probabilities on real rows."""

    max_abs_diff: float  # max |p_xgboost - p_onnxruntime| over every row and class
    top1_agreement: float  # share of rows whose argmax of the ONNX probabilities matches xgboost's
    label_agreement: float  # share of rows whose ONNX "label" output matches xgboost's argmax
    samples: int


def _as_classifier(model: xgb.Booster | xgb.XGBModel) -> xgb.XGBModel:
    """A Booster loaded into an XGBClassifier (xgboost's own load_model). onnxmltools reads a bare Booster by
    guessing, and guesses a regressor when every tree cover is a whole number (measured: a one-round
    binary model); the classifier carries its objective and classes, so nothing is guessed."""
    if isinstance(model, xgb.XGBModel):
        return model
    classifier = xgb.XGBClassifier()
    classifier.load_model(bytearray(model.save_raw("ubj")))
    return classifier


def convert_xgboost_model(model: xgb.Booster | xgb.XGBModel, num_features: int) -> Any:
    """The ONNX ModelProto of a Booster or XGBClassifier (in memory; see export_xgboost_onnx)."""
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    classifier = _as_classifier(model)
    trained_on = classifier.get_booster().num_features()
    if trained_on != num_features:
        raise XGBoostExportError(f"the model takes {trained_on} features, not {num_features}")
    initial_types = [(INPUT_NAME, FloatTensorType([None, num_features]))]
    try:
        onnx_model = convert_xgboost(classifier, initial_types=initial_types)
    except (RuntimeError, ValueError, KeyError) as error:
        raise XGBoostExportError(f"onnxmltools could not convert the XGBoost model: {error}") from error
    outputs = tuple(output.name for output in onnx_model.graph.output)
    if outputs != OUTPUT_NAMES:  # a regressor
        raise XGBoostExportError(f"the converted graph has outputs {outputs}, not a classifier's {OUTPUT_NAMES}")
    return onnx_model


def export_xgboost_onnx(model: xgb.Booster | xgb.XGBModel, path: str | Path, num_features: int) -> Path:
    """Convert `model` (a Booster or XGBClassifier taking `num_features` columns) to ONNX at `path`,
    written atomically; returns the path."""
    import onnx

    target = Path(path)
    onnx_model = convert_xgboost_model(model, num_features)
    with atomic_output(target) as tmp:
        onnx.save(onnx_model, str(tmp))
    return target


def verify_xgboost_onnx(
    model: xgb.Booster | xgb.XGBModel, path: str | Path, x: np.ndarray, batch: int = 256
) -> XGBoostVerification:
    """Run xgboost and the ONNX file (ONNX Runtime CPU, `batch` rows per call) on the rows `x` and compare."""
    import onnxruntime as ort

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    rows = np.ascontiguousarray(x, dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = predict_probabilities(model, rows)
    labels: list[np.ndarray] = []
    probabilities: list[np.ndarray] = []
    for start in range(0, len(rows), batch):
        label, probs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: rows[start : start + batch]})
        labels.append(np.asarray(label))
        probabilities.append(np.asarray(probs, np.float32))
    if not probabilities:
        return XGBoostVerification(0.0, 1.0, 1.0, 0)
    have, have_label = np.concatenate(probabilities), np.concatenate(labels)
    if have.shape != want.shape:
        raise XGBoostExportError(f"{path}: ONNX probabilities have shape {have.shape}, xgboost's {want.shape}")
    top1 = want.argmax(1)
    return XGBoostVerification(
        max_abs_diff=float(np.abs(want - have).max()),
        top1_agreement=float((have.argmax(1) == top1).mean()),
        label_agreement=float((have_label == top1).mean()),
        samples=len(rows),
    )
