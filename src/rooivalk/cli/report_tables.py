"""Sections every `rooivalk report` shares, whatever the model: the training stages and time."""

from __future__ import annotations

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
    ]
