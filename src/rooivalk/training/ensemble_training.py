"""The XGBoost member of a table plan's ensemble (`ensemble`), trained beside the engine's mlp.

XGBoost trains by xgboost itself (rooivalk.training.xgboost_training: early stopping on the
validation split, per-round metrics under an `xgboost_` prefix) on the very model inputs the mlp
learnt from, so both members see the same encoding and splits. With `ensemble.weights: fitted`, the
weights are fitted here, on the validation split's probabilities of both members; the test split
stays untouched for evaluation.
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax
from torch import nn

from rooivalk import storage
from rooivalk.data.table_dataset import TableDataset, model_inputs
from rooivalk.events import MetricsFn, ProgressFn
from rooivalk.models.array_artifact import XGBOOST_FILE, EnsembleInfo
from rooivalk.models.array_inference import INPUTS, array_logits
from rooivalk.models.ensemble_weights import fit_weights, normalize_weights
from rooivalk.plan import ENSEMBLE_MEMBERS, Plan
from rooivalk.training.xgboost_training import XGBoostSettings, predict_probabilities, train_xgboost


def _split(dataset: TableDataset, split: str) -> tuple[np.ndarray, np.ndarray]:
    numeric, codes, labels = dataset.subset(split)
    return model_inputs(dataset.info, numeric, codes), labels


def train_ensemble_member(
    plan: Plan,
    dataset: TableDataset,
    mlp: nn.Module,
    model_dir: str,
    progress: ProgressFn | None = None,
    log_metrics: MetricsFn | None = None,
) -> tuple[EnsembleInfo, dict[str, float]]:
    """Train the XGBoost member, write it to `model_dir`, settle the weights; (info, metrics)."""
    assert plan.ensemble is not None
    spec = plan.ensemble.xgboost
    settings = XGBoostSettings(
        n_estimators=spec.trees,
        max_depth=spec.max_depth,
        learning_rate=spec.learning_rate,
        early_stopping_rounds=spec.early_stopping_rounds,
        subsample=spec.subsample,
        colsample_bytree=spec.colsample_bytree,
        min_child_weight=spec.min_child_weight,
        reg_lambda=spec.reg_lambda,
        seed=plan.training.seed,
        n_jobs=plan.training.threads,
    )
    (train_x, train_y), (val_x, val_y) = _split(dataset, "train"), _split(dataset, "val")

    def log_rounds(metrics: dict[str, float], step: int) -> None:
        if log_metrics is not None:
            log_metrics({f"xgboost_{name}": value for name, value in metrics.items()}, step)

    result = train_xgboost(
        train_x, train_y, val_x, val_y, dataset.num_classes, settings, progress=progress, log_metrics=log_rounds
    )
    digest = storage.write_bytes(f"{model_dir}/{XGBOOST_FILE}", bytes(result.model.save_raw("ubj")))
    val_probabilities = {
        "model": softmax(array_logits(mlp, {INPUTS: val_x}, dataset.num_classes), axis=1),
        "xgboost": predict_probabilities(result.model, val_x),
    }
    weights_spec = plan.ensemble.weights
    if weights_spec == "fitted":
        weights = fit_weights(val_probabilities, val_y)
    else:
        weights = normalize_weights(weights_spec, list(ENSEMBLE_MEMBERS))
    combined = sum(weights[name] * val_probabilities[name] for name in ENSEMBLE_MEMBERS)
    metrics = {f"xgboost_{name}": value for name, value in result.metrics.items()}
    metrics["ensemble_val_accuracy"] = float((np.asarray(combined).argmax(1) == val_y).mean())
    metrics |= {f"ensemble_weight_{name}": weight for name, weight in weights.items()}
    info = EnsembleInfo(weights=weights, fitted=weights_spec == "fitted", xgboost_sha256=digest)
    return info, metrics
