"""Gradient-boosted trees for tabular classification, trained by xgboost itself (the reference plan's
threat-attribution model): softprob (logistic for two classes), early stopping on the validation split, the
validation curve per round as a history, and the engine's progress and metrics callbacks.

Not a second training loop: xgboost's own `xgboost.train` boosts; this module only states the
parameters, watches the rounds through an xgboost `TrainingCallback`, and keeps the best rounds.

Threads: OpenMP threads spin while they wait, so an xgboost that uses more threads than the cores
it really gets (two pytest workers on two cores, a busy node) can run 100x slower. `n_jobs=1` is
the safe choice wherever the cores are shared; `None` takes xgboost's default (every core).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xgboost as xgb

from rooivalk.events import MetricsFn, ProgressFn

STAGE = "xgboost"


def _objective(num_classes: int) -> tuple[str, str, str]:
    """(objective, loss metric, error metric). Two classes train as binary:logistic (one tree per round):
    ONNX Runtime reads a two-class TreeEnsembleClassifier as one margin, so a two-class softprob model
    converts to wrong probabilities (measured: max diff 0.56), while the logistic one converts exactly."""
    if num_classes == 2:
        return "binary:logistic", "logloss", "error"
    return "multi:softprob", "mlogloss", "merror"


@dataclass(frozen=True)
class XGBoostSettings:
    """xgboost's parameters, under their scikit-learn names."""

    n_estimators: int = 200  # boosting rounds at most (each adds one tree per class)
    max_depth: int = 8
    learning_rate: float = 0.1
    early_stopping_rounds: int | None = 20  # rounds without a lower validation log loss; None: never stop
    subsample: float = 1.0  # share of rows sampled per tree
    colsample_bytree: float = 1.0  # share of features sampled per tree
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0  # L2 on leaf weights
    seed: int = 0
    n_jobs: int | None = None  # threads; None: xgboost's default (all cores); see the module docstring
    progress_every: int = 10  # rounds between progress events (the last round always reports)

    def __post_init__(self) -> None:
        for name in ("n_estimators", "max_depth", "progress_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"xgboost.{name} must be >= 1, got {getattr(self, name)}")
        if self.early_stopping_rounds is not None and self.early_stopping_rounds < 1:
            raise ValueError(f"xgboost.early_stopping_rounds must be >= 1 or None, got {self.early_stopping_rounds}")
        if self.learning_rate <= 0:
            raise ValueError(f"xgboost.learning_rate must be > 0, got {self.learning_rate}")
        for name in ("subsample", "colsample_bytree"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"xgboost.{name} must be in (0, 1], got {getattr(self, name)}")
        if self.n_jobs is not None and self.n_jobs < 1:
            raise ValueError(f"xgboost.n_jobs must be >= 1 or None, got {self.n_jobs}")

    def params(self, num_classes: int) -> dict[str, Any]:
        """The parameter dict of `xgboost.train`."""
        objective, loss, error = _objective(num_classes)
        params: dict[str, Any] = {
            "objective": objective,
            "eval_metric": [error, loss],  # early stopping watches the last one
            "tree_method": "hist",  # deterministic on the CPU for a given seed, whatever the thread count
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "lambda": self.reg_lambda,
            "seed": self.seed,
        }
        if objective.startswith("multi:"):
            params["num_class"] = num_classes
        if self.n_jobs is not None:
            params["nthread"] = self.n_jobs
        return params


@dataclass
class XGBoostResult:
    model: xgb.Booster  # cut to rounds 0..best_iteration: every prediction and export uses the best rounds
    best_iteration: int  # 0-based round with the lowest validation log loss; history[best_iteration] is its row
    rounds: int  # rounds trained before early stopping (or n_estimators)
    seconds: float
    val_accuracy: float  # of `model` on the validation split
    val_loss: float  # validation log loss of `model`
    history: list[dict[str, float]] = field(default_factory=list)  # one row per round, "epoch" = round + 1

    @property
    def metrics(self) -> dict[str, float]:
        return {
            "val_accuracy": self.val_accuracy,
            "val_loss": self.val_loss,
            "best_iteration": float(self.best_iteration),
            "rounds": float(self.rounds),
            "train_seconds": self.seconds,
        }


def _last(scores: list[float] | list[tuple[float, float]]) -> float:
    # xgboost's cv logs (mean, std) pairs; xgboost.train logs plain floats
    score = scores[-1]
    return float(score[0] if isinstance(score, tuple) else score)


class _RoundWatcher(xgb.callback.TrainingCallback):
    """Turns each boosting round's evaluation into a history row, a metrics call and, every
    `settings.progress_every` rounds, an engine-style epoch_end progress event."""

    def __init__(
        self, settings: XGBoostSettings, num_classes: int, rows: int, progress: ProgressFn | None, log: MetricsFn | None
    ):
        super().__init__()
        self.settings, self.rows, self.progress, self.log = settings, rows, progress, log
        _, self.loss, self.error = _objective(num_classes)
        self.history: list[dict[str, float]] = []
        self.best_loss = float("inf")
        self.last = time.perf_counter()
        self.reported = 0  # the last round a progress event went out for
        self.improved = False

    def before_training(self, model: Any) -> Any:
        self.last = time.perf_counter()
        return model

    def after_iteration(self, model: Any, epoch: int, evals_log: xgb.callback.TrainingCallback.EvalsLog) -> bool:
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        train, val = evals_log["train"], evals_log["val"]
        metrics = {
            "train_loss": _last(train[self.loss]),
            "val_accuracy": 1.0 - _last(val[self.error]),
            "val_loss": _last(val[self.loss]),
            "val_error": _last(val[self.error]),
            "epoch_seconds": seconds,
            "samples_per_second": self.rows / max(seconds, 1e-9),
            "lr_at_epoch_end": self.settings.learning_rate,
        }
        self.improved = metrics["val_loss"] < self.best_loss
        self.best_loss = min(self.best_loss, metrics["val_loss"])
        round_number = epoch + 1
        self.history.append({**metrics, "epoch": float(round_number)})
        if self.log is not None:
            self.log(metrics, round_number)
        if round_number % self.settings.progress_every == 0:
            self._report()
        return False

    def after_training(self, model: Any) -> Any:
        if self.history and self.reported < len(self.history):  # the round early stopping ended on
            self._report()
        return model

    def _report(self) -> None:
        self.reported = len(self.history)
        if self.progress is not None:
            row = {k: v for k, v in self.history[-1].items() if k != "epoch"}
            event = {"event": "epoch_end", "stage": STAGE, "epoch": self.reported, "epochs": self.settings.n_estimators}
            self.progress({**event, **row, "improved": self.improved})


def _check_split(name: str, x: np.ndarray, y: np.ndarray, num_classes: int) -> None:
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{name}: need x (N, F) and y (N,) with N >= 1, got x {x.shape} and y {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name}: labels must be integer class indices, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"{name}: labels must lie in [0, {num_classes}), got {y.min()}..{y.max()}")


def train_xgboost(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    num_classes: int,
    settings: XGBoostSettings | None = None,
    progress: ProgressFn | None = None,
    log_metrics: MetricsFn | None = None,
) -> XGBoostResult:
    """Boost up to `settings.n_estimators` rounds on the training split, stopping once the validation
    log loss has not improved for `settings.early_stopping_rounds` rounds; the returned model keeps the
    best rounds only. `log_metrics(metrics, round)` is called every round, `progress(event)` every
    `settings.progress_every` rounds."""
    settings = settings or XGBoostSettings()
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    _check_split("train", train_x, train_y, num_classes)
    _check_split("val", val_x, val_y, num_classes)
    if train_x.shape[1] != val_x.shape[1]:
        raise ValueError(f"train has {train_x.shape[1]} features but val has {val_x.shape[1]}")
    dtrain = xgb.DMatrix(np.asarray(train_x, np.float32), label=train_y, nthread=settings.n_jobs or -1)
    dval = xgb.DMatrix(np.asarray(val_x, np.float32), label=val_y, nthread=settings.n_jobs or -1)
    watcher = _RoundWatcher(settings, num_classes, len(train_x), progress, log_metrics)
    callbacks: list[xgb.callback.TrainingCallback] = [watcher]
    if settings.early_stopping_rounds is not None:
        callbacks.append(
            xgb.callback.EarlyStopping(
                rounds=settings.early_stopping_rounds, metric_name=watcher.loss, data_name="val", save_best=False
            )
        )
    started = time.perf_counter()
    booster = xgb.train(
        settings.params(num_classes),
        dtrain,
        num_boost_round=settings.n_estimators,
        evals=[(dtrain, "train"), (dval, "val")],  # the last one is what early stopping watches
        callbacks=callbacks,
        verbose_eval=False,
    )
    seconds = time.perf_counter() - started
    rounds = booster.num_boosted_rounds()
    # Without early stopping xgboost sets no best_iteration; the lowest validation loss is the best either way.
    best = int(np.argmin([row["val_loss"] for row in watcher.history]))
    model = booster[: best + 1]
    best_row = watcher.history[best]
    return XGBoostResult(
        model=model,
        best_iteration=best,
        rounds=rounds,
        seconds=seconds,
        val_accuracy=best_row["val_accuracy"],
        val_loss=best_row["val_loss"],
        history=watcher.history,
    )


def predict_probabilities(model: xgb.Booster | xgb.XGBModel, x: np.ndarray) -> np.ndarray:
    """Class probabilities (N, K) as float32, from a Booster (every round it holds) or an XGBClassifier."""
    if isinstance(model, xgb.XGBModel):
        return np.asarray(model.predict_proba(np.asarray(x, np.float32)), np.float32)
    probabilities = np.asarray(model.predict(xgb.DMatrix(np.asarray(x, np.float32))), np.float32)
    if probabilities.ndim == 1:  # binary:logistic gives P(class 1)
        return np.stack([1.0 - probabilities, probabilities], axis=1)
    return probabilities
