"""Sections every `rooivalk report` shares, whatever the model: the training stages and time; and an
ensemble's members beside the ensemble on the test split."""

from __future__ import annotations

import re
from typing import Any


def training_section(train: dict[str, Any], score_key: str, score_label: str) -> list[str]:
    """'## Training stages': one row per stage with its best validation score (`score_key` of the stage
    record, e.g. best_val_accuracy or a detector's best_val_map50), then the training time."""
    return [
        "## Training stages",
        "",
        f"| stage | epochs | trainable params | share of model | best {score_label} | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *[
            f"| {s['stage']} | {s['epochs']:.0f} | {s['trainable_params']:,.0f} | {s['trainable_share']:.1%} | "
            f"{s.get(score_key, float('nan')):.4f} | {s['seconds']:.0f} |"
            for s in train.get("stages", [])
        ],
        "",
        f"Training time: {train['metrics'].get('train_seconds', 0):.0f} s.",
        "",
        *cross_validation_section(train["metrics"]),
    ]


# Held-out figures a cross-validation reports per fold (rooivalk.training.cross_validation), as labelled.
_CV_ROWS = (("accuracy", "accuracy"), ("macro_f1", "macro F1"), ("min_class_recall", "lowest class recall"),
            ("log_loss", "log loss"), ("best_epoch", "best epoch"))  # fmt: skip


def cross_validation_section(metrics: dict[str, Any]) -> list[str]:
    """'## Cross-validation': each fold's held-out figures, their mean and std; nothing without one."""
    folds = int(metrics.get("cv_folds", 0))
    if not folds:
        return []
    header = " | ".join(f"fold {j + 1}" for j in range(folds))
    lines = [
        "## Cross-validation",
        "",
        f"{folds} folds of the training split; each fold model scored on the fold it did not train on.",
        "",
        f"| held-out | {header} | mean | std |",
        "| --- |" + " ---: |" * (folds + 2),
    ]
    for key, label in _CV_ROWS:
        cells = " | ".join(f"{metrics.get(f'fold{j}_{key}', float('nan')):.4f}" for j in range(folds))
        lines.append(
            f"| {label} | {cells} | {metrics.get(f'cv_{key}_mean', float('nan')):.4f} "
            f"| {metrics.get(f'cv_{key}_std', float('nan')):.4f} |"
        )
    return [*lines, ""]


_MEMBER = re.compile(r"^test_member_(.+)_accuracy$")


def ensemble_section(evaluation: dict[str, Any]) -> list[str]:
    """'## Ensemble': each member alone and the ensemble on the test split, from the evaluation step's
    test_member_<name>_* (a table plan's mlp and XGBoost, a variant ensemble's members 0..M-1); nothing
    for a single model."""
    names = [match.group(1) for key in evaluation if (match := _MEMBER.match(key))]
    if not names:
        return []
    nan = float("nan")
    rows = [
        f"| {'member ' + name if name.isdigit() else name} | {evaluation[f'test_member_{name}_accuracy']:.4f} "
        f"| {evaluation.get(f'test_member_{name}_log_loss', nan):.4f} |"
        for name in names
    ]
    return [
        "## Ensemble",
        "",
        "Each member alone and the weighted average of their probabilities, on the test split (the gates judge "
        "the ensemble).",
        "",
        "| model | test accuracy | test log loss |",
        "| --- | ---: | ---: |",
        *rows,
        f"| **ensemble** | {evaluation.get('test_accuracy', nan):.4f} "
        f"| {evaluation.get('test_ensemble_log_loss', nan):.4f} |",
        "",
    ]
