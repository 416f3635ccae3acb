"""k-fold cross-validation of a sequence, table or image plan (`evaluation.cross_validation`), on the one engine.

The training split is cut into k folds (stratified by class unless the plan says otherwise, seeded);
fold model j trains on the other k - 1 folds through the same path as a plain run (engine, stages,
early stopping, an ensemble's XGBoost member, distillation, compression phases) and picks its best
epoch on fold j, which it is then scored on. The validation and test splits take no part in the
folds: the test split stays untouched for evaluation, and the refit below keeps its usual validation
split. A sequence or table dataset's per-feature standardization was computed at ingest on the whole
training split, so each fold's held-out rows took part in those statistics (the usual small leak of
dataset-level preprocessing; never their labels). The held-out fold is also each fold model's
validation split, so it picks the fold's best epoch (and stops it early): the fold figures lean
slightly optimistic, as any score of the split that chose the epoch; with fixed epochs they do not.
A distillation teacher trained on the whole training split has seen every held-out fold. Image
plans train in one process here.

The result carries, for each held-out metric m (accuracy, macro_f1, min_class_recall, log_loss,
best_epoch): `cv_m_mean`, `cv_m_std` (population std over folds) and `fold<j>_m`. The model the
step ships (`refit`): `all` trains once more on the whole training split with the validation split
choosing its best epoch (what a run without cross-validation ships); `best_fold` ships the fold
model with the highest held-out accuracy (it saw (k-1)/k of the training split). Each fold's model
and history stay under `<model dir>/folds/<j>`; each fold checkpoints under `<checkpoint uri>/fold-<j>`,
so a rerun resumes fold by fold.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import torch
from scipy.special import softmax
from sklearn.metrics import f1_score, log_loss, recall_score
from sklearn.model_selection import KFold, StratifiedKFold

from rooivalk import storage
from rooivalk.data.dataset import SPLIT_CODES, Dataset, load_dataset
from rooivalk.data.datasets import ArrayDataset, load_array_dataset
from rooivalk.events import MetricsFn, ProgressFn
from rooivalk.models.array_artifact import load_array_model
from rooivalk.models.array_inference import model_arrays
from rooivalk.models.artifact import INFO_FILE
from rooivalk.plan import ARRAY_FORMATS, Plan
from rooivalk.plan.evaluation import CV_METRICS
from rooivalk.training.array_probabilities import predicted_probabilities
from rooivalk.training.array_training import train_array_on
from rooivalk.training.image_training import train_image_on
from rooivalk.training.results import TrainResult

FOLDS_DIR = "folds"
CV_FILE = "cross_validation.json"
FoldedDataset = ArrayDataset | Dataset  # sequences, tables, images: each keeps its split codes in `splits`
HELD_OUT_METRICS = CV_METRICS


class CrossValidationError(ValueError):
    pass


def fold_splits(dataset: FoldedDataset, folds: int, stratified: bool, seed: int) -> list[np.ndarray]:
    """Per fold, split codes (N,) int8: the fold's training rows "train", its held-out rows "val", and
    every row outside the training split "test" (seen by no fold)."""
    train_rows = np.flatnonzero(dataset.splits == SPLIT_CODES["train"])
    labels = dataset.labels[train_rows]
    splitter = (
        StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        if stratified
        else KFold(n_splits=folds, shuffle=True, random_state=seed)
    )
    if len(train_rows) < folds:
        raise CrossValidationError(
            f"evaluation.cross_validation.folds: {folds} folds need at least {folds} training rows, "
            f"dataset {dataset.info.version_id} has {len(train_rows)}"
        )
    if stratified:
        counts = np.bincount(labels, minlength=len(dataset.info.classes))
        scarce = [dataset.info.classes[k] for k in np.flatnonzero(counts < folds)]
        if scarce:
            raise CrossValidationError(
                f"evaluation.cross_validation: stratified {folds}-fold needs {folds} training rows of every class; "
                f"dataset {dataset.info.version_id} has fewer of {scarce} (lower folds, or stratified: false)"
            )
    codes = []
    for fit_index, held_index in splitter.split(train_rows, labels):
        fold = np.full(len(dataset.splits), SPLIT_CODES["test"], dtype=np.int8)
        fold[train_rows[fit_index]] = SPLIT_CODES["train"]
        fold[train_rows[held_index]] = SPLIT_CODES["val"]
        codes.append(fold)
    return codes


def array_held_out(model_dir: str, dataset: ArrayDataset, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (n, K), labels (n,)) of the fold model at `model_dir` (its XGBoost member weighted in,
    for a table ensemble) on the dataset's "val" rows, the fold's held-out rows."""
    model, info = load_array_model(model_dir)
    arrays, labels = model_arrays(info, dataset, "val")
    return predicted_probabilities(model, info, model_dir, arrays, batch_size), labels


def held_out_metrics(probabilities: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy, macro F1, the lowest recall of a class present, log loss of (n, K) probabilities."""
    predictions = probabilities.argmax(1)
    classes = list(range(num_classes))
    present = np.unique(labels)  # a class absent from a small fold has no recall to take the minimum of
    return {
        "accuracy": float((predictions == labels).mean()),
        "macro_f1": float(f1_score(labels, predictions, labels=classes, average="macro", zero_division=0)),
        "min_class_recall": float(recall_score(labels, predictions, labels=present, average=None).min()),
        "log_loss": float(log_loss(labels, np.clip(probabilities, 1e-12, 1.0), labels=classes)),
    }


def _train_fold(
    plan: Plan,
    dataset: FoldedDataset,
    model_dir: str,
    progress: ProgressFn | None,
    log_metrics: MetricsFn | None,
    checkpoint_uri: str | None,
) -> tuple[TrainResult, dict[str, float]]:
    """Train on the dataset's train split (picking the best epoch on its val split) into `model_dir`; the
    result and the model's metrics on the val split."""
    batch = plan.training.eval_batch_size
    if isinstance(dataset, Dataset):  # images: the trainer's task holds the val split, preprocessed
        result, trainer = train_image_on(plan, dataset, model_dir, progress, log_metrics, checkpoint_uri)
        logits = trainer.task.val_logits(trainer.model, batch, torch.device("cpu"))  # type: ignore[attr-defined]
        probabilities, labels = softmax(logits.numpy(), axis=1), np.asarray(trainer.task.val_labels)
    else:
        result = train_array_on(plan, dataset, model_dir, progress, log_metrics, checkpoint_uri)
        probabilities, labels = array_held_out(model_dir, dataset, batch)
    scores = held_out_metrics(probabilities, labels, len(dataset.info.classes))
    return result, scores | {"best_epoch": result.metrics["best_epoch"]}


def summarize(folds: list[dict[str, float]]) -> dict[str, float]:
    """cv_<m>_mean, cv_<m>_std (over folds) and fold<j>_<m> of each held-out metric."""
    out: dict[str, float] = {"cv_folds": float(len(folds))}
    for name in HELD_OUT_METRICS:
        values = np.array([fold[name] for fold in folds], dtype=np.float64)
        out[f"cv_{name}_mean"], out[f"cv_{name}_std"] = float(values.mean()), float(values.std())
        out |= {f"fold{j}_{name}": float(value) for j, value in enumerate(values)}
    return out


def cross_validate(
    plan: Plan,
    dataset_dir: str,
    model_dir: str,
    progress: ProgressFn | None = None,
    log_metrics: MetricsFn | None = None,
) -> TrainResult:
    """Train and score the k fold models, then the model that ships (refit); metrics as the module says."""
    spec = plan.evaluation.cross_validation
    assert spec is not None
    dataset: FoldedDataset = (
        load_array_dataset(dataset_dir) if plan.data.format in ARRAY_FORMATS else load_dataset(dataset_dir)
    )
    report = progress or (lambda _event: None)
    checkpoint_uri = plan.training.checkpoint.uri
    seed = plan.training.seed if spec.seed is None else spec.seed
    folds: list[dict[str, float]] = []
    results: list[TrainResult] = []
    for j, codes in enumerate(fold_splits(dataset, spec.folds, spec.stratified, seed)):
        report({"event": "message", "text": f"cross-validation fold {j + 1}/{spec.folds}"})

        def fold_metrics(metrics: dict[str, float], step: int, fold: int = j) -> None:
            if log_metrics is not None:  # one MLflow run: each fold's epochs under its own names
                log_metrics({f"fold{fold}_{name}": value for name, value in metrics.items()}, step)

        def fold_progress(event: dict[str, Any], fold: int = j) -> None:
            report({**event, "fold": fold})

        trained, scores = _train_fold(
            plan,
            dataclasses.replace(dataset, splits=codes),
            f"{model_dir}/{FOLDS_DIR}/{j}",
            fold_progress,
            fold_metrics,
            None if checkpoint_uri is None else f"{checkpoint_uri.rstrip('/')}/fold-{j}",
        )
        folds.append(scores)
        results.append(trained)
        running = {f"cv_{name}_mean": float(np.mean([f[name] for f in folds])) for name in HELD_OUT_METRICS}
        report({"event": "fold_end", "fold": j, "folds": spec.folds, **scores, **running})
    summary = summarize(folds)
    storage.write_text(f"{model_dir}/{CV_FILE}", json.dumps({"folds": folds, "summary": summary}, indent=2))
    best = int(np.argmax([fold["accuracy"] for fold in folds]))
    if spec.refit == "best_fold":  # its files are the model's (an XGBoost member's too): the same bytes and digests
        report({"event": "message", "text": f"refit best_fold: fold {best + 1} of {spec.folds} ships"})
        storage.copy_folder(f"{model_dir}/{FOLDS_DIR}/{best}", model_dir, last=INFO_FILE)
        result = results[best]
    else:
        report({"event": "message", "text": "refit all: training on the whole training split"})
        refit_uri = None if checkpoint_uri is None else f"{checkpoint_uri.rstrip('/')}/refit"
        result, _ = _train_fold(plan, dataset, model_dir, progress, log_metrics, refit_uri)
    result.metrics |= summary | {"cv_best_fold": float(best)}
    return result
