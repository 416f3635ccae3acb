"""Ensemble weights and soft voting: a weighted average of members' class probabilities.

Members are given as probability matrices (N, K) on the same rows and classes, whatever produced them
(XGBoost, an MLP, a CNN). Weights are given (a plan's {"xgboost": 0.6, "mlp": 0.4}) or fitted on the
validation split by `fit_weights`; rooivalk.evaluation.ensemble scores every member alone and the
ensemble. Here, below training, because a table plan's training step settles its ensemble's weights.

Weights fitting: the validation log-loss of a weighted average, -mean_i log(sum_m w_m p_m[i, y_i]), is
convex in w (minus the log of a linear function), so it is minimized directly on the simplex (w >= 0,
sum w = 1) by SLSQP with the analytic gradient, from equal weights. A convex problem has no spurious
local minima, the start is fixed so the result is deterministic, and the simplex (unlike a softmax
parametrization, which only approaches it) lets a useless member get a weight of exactly 0. Each member
alone is a vertex of the simplex, so the optimum is never worse than the best member; the fit is kept
only if it is, else the best vertex (or equal weights) is returned, which guards against an early stop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import minimize

ENSEMBLE = "ensemble"  # the ensemble's row in a report; no member may take this name
EPSILON = 1e-15  # probabilities are clipped to [EPSILON, 1] before the log, as sklearn's log_loss does


def probability_matrices(probabilities: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The members' matrices as float64 (N, K), checked to share one shape and to be probabilities."""
    if not probabilities:
        raise ValueError("an ensemble needs at least one member's probabilities")
    result: dict[str, np.ndarray] = {}
    for name, values in probabilities.items():
        matrix = np.asarray(values, dtype=np.float64)
        if name == ENSEMBLE:
            raise ValueError(f"member {name!r}: the name is reserved for the ensemble's row")
        if matrix.ndim != 2 or matrix.shape[1] < 1:
            raise ValueError(f"member {name!r}: probabilities must be (rows, classes); got shape {matrix.shape}")
        first = next(iter(result.values()), matrix)
        if matrix.shape != first.shape:
            raise ValueError(f"member {name!r}: shape {matrix.shape} differs from the others' {first.shape}")
        if not np.isfinite(matrix).all() or (matrix < 0).any():
            raise ValueError(f"member {name!r}: probabilities must be finite and >= 0")
        if not np.allclose(matrix.sum(axis=1), 1.0, atol=1e-3):
            raise ValueError(f"member {name!r}: rows must sum to 1 (class probabilities, not logits)")
        result[name] = matrix
    return result


def label_indices(labels: np.ndarray, rows: int, classes: int) -> np.ndarray:
    array = np.asarray(labels)
    if array.shape != (rows,) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"labels must be {rows} integer class indices; got {array.dtype} {array.shape}")
    if rows and (array.min() < 0 or array.max() >= classes):
        raise ValueError(f"labels must be class indices in [0, {classes}); got {array.min()}..{array.max()}")
    return array.astype(np.int64)


def normalize_weights(weights: Mapping[str, float], members: Sequence[str]) -> dict[str, float]:
    """Weights of every member (in `members` order), checked and scaled to sum 1.

    Refused, naming the member: a weight for a member that does not exist, a member without a weight
    (give it 0 to leave it out), a negative or non-finite weight; and weights that are all zero.
    """
    unknown = [name for name in weights if name not in members]
    if unknown:
        raise ValueError(f"weights name members that do not exist: {unknown}; members: {list(members)}")
    missing = [name for name in members if name not in weights]
    if missing:
        raise ValueError(f"members {missing} have no weight (give a weight of 0 to leave a member out)")
    for name in members:
        if not np.isfinite(weights[name]) or weights[name] < 0:
            raise ValueError(f"member {name!r}: weight {weights[name]} must be finite and >= 0")
    total = float(sum(weights[name] for name in members))
    if total <= 0:
        raise ValueError(f"weights of members {list(members)} are all zero")
    return {name: float(weights[name]) / total for name in members}


def combine(probabilities: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Soft voting: sum_m w_m p_m with the weights normalized to sum 1 -> float64 (N, K)."""
    matrices = probability_matrices(probabilities)
    normalized = normalize_weights(weights, list(matrices))
    mixed = np.zeros_like(next(iter(matrices.values())))
    for name, matrix in matrices.items():
        mixed += normalized[name] * matrix
    return mixed


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class, probabilities clipped to [EPSILON, 1]."""
    if len(labels) == 0:
        return float("nan")
    true_class = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(true_class, EPSILON, 1.0)).mean())


def _mixture_loss(weights: np.ndarray, true_class: np.ndarray) -> tuple[float, np.ndarray]:
    """Log-loss of the weighted average and its gradient in the weights; true_class is (N, M)."""
    mixed = np.maximum(true_class @ weights, EPSILON)  # (N,) ensemble probability of the true class
    gradient = -(true_class / mixed[:, None]).mean(axis=0)  # (M,)
    return float(-np.log(mixed).mean()), gradient


def fit_weights(
    val_probabilities: Mapping[str, np.ndarray], val_labels: np.ndarray, members: Sequence[str] | None = None
) -> dict[str, float]:
    """Non-negative weights summing to 1 that minimize the validation log-loss (SLSQP on the simplex).

    `members`: those that may get a weight (all by default); every other member of `val_probabilities`
    gets 0, so the result is a valid `combine` argument for the same members.
    """
    matrices = probability_matrices(val_probabilities)
    chosen = list(matrices) if members is None else list(members)
    unknown = [name for name in chosen if name not in matrices]
    if unknown or not chosen:
        raise ValueError(f"members {unknown or chosen} to weight are not among {list(matrices)}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"members to weight are named more than once: {chosen}")
    rows, classes = next(iter(matrices.values())).shape
    labels = label_indices(val_labels, rows, classes)
    if rows == 0:
        raise ValueError("fitting ensemble weights needs validation rows; there are none")
    # (N, M): each member's probability of the true class; the only numbers the loss depends on.
    true_class = np.stack([matrices[name][np.arange(rows), labels] for name in chosen], axis=1)
    count = len(chosen)
    candidates = [np.full(count, 1.0 / count), *np.eye(count)]  # equal weights, then each member alone
    if count > 1:
        result = minimize(
            _mixture_loss,
            candidates[0],
            args=(true_class,),
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * count,
            constraints=[{"type": "eq", "fun": lambda w: float(w.sum() - 1.0), "jac": lambda w: np.ones_like(w)}],
            options={"maxiter": 500, "ftol": 1e-12},
        )
        fitted = np.clip(result.x, 0.0, None)
        fitted[fitted < 1e-9] = 0.0  # SLSQP leaves ~1e-17 where the bound is active
        if fitted.sum() > 0:
            candidates.insert(0, fitted / fitted.sum())
    best = min(candidates, key=lambda w: _mixture_loss(w, true_class)[0])  # first of equal losses wins
    weights = dict.fromkeys(matrices, 0.0)
    weights.update({name: float(value) for name, value in zip(chosen, best, strict=True)})
    return weights
