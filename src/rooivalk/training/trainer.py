"""`train_model`: fine-tune or train the plan's model on a dataset artifact, stage by stage."""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rooivalk import storage
from rooivalk.data.dataset import load_dataset
from rooivalk.models import ModelInfo, create_model, layer_groups, normalization, save_trained_model
from rooivalk.plan import Plan
from rooivalk.training.loop import BestState, InputSpec, MetricsFn, ProgressFn, StageRun, run_stage
from rooivalk.training.stages import default_stages, resolve_stages

HISTORY_FILE = "stages.json"


@dataclass
class TrainResult:
    metrics: dict[str, float]
    stages: list[dict[str, Any]]
    artifacts: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    info: ModelInfo | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _num_classes(plan: Plan, dataset_classes: list[str]) -> int:
    wanted = plan.model.num_classes
    if wanted == "auto":
        return len(dataset_classes)
    if wanted != len(dataset_classes):
        raise ValueError(
            f"model.num_classes is {wanted} but the dataset has {len(dataset_classes)} classes: {dataset_classes}"
        )
    return wanted


def _noop(*_: Any) -> None:
    return None


def train_model(
    plan: Plan,
    dataset_dir: str,
    model_dir: str,
    progress: ProgressFn | None = None,
    log_metrics: MetricsFn | None = None,
) -> TrainResult:
    """Train per the plan's stages and write the best-by-validation model to `model_dir`."""
    spec = plan.training
    seed_everything(spec.seed)
    torch.set_num_threads(spec.threads or os.cpu_count() or 1)
    dataset = load_dataset(dataset_dir)
    num_classes = _num_classes(plan, dataset.info.classes)
    model = create_model(plan.model, num_classes)
    mean, std = normalization(model)
    in_chans = int(getattr(model, "pretrained_cfg", {}).get("input_size", (3,))[0])
    if spec.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    groups = layer_groups(model)
    stage_specs = spec.stages or default_stages(plan.model.pretrained is not None, spec)
    stages = resolve_stages(stage_specs, groups)
    inputs = InputSpec(plan.model.input_size, in_chans, mean, std, spec.channels_last)
    run = StageRun(
        model,
        groups,
        dataset.subset("train"),
        dataset.subset("val"),
        inputs,
        spec,
        progress or _noop,
        log_metrics or _noop,
    )
    best = BestState()
    summaries: list[dict[str, Any]] = []
    started = time.perf_counter()
    for index, stage in enumerate(stages):
        summary = run_stage(run, stage, index, best)
        summaries.append({"stage": stage.name, "groups": stage.group_lrs, **summary})
    train_seconds = time.perf_counter() - started
    model.load_state_dict(best.state_dict)
    info = ModelInfo(
        spec=plan.model,
        classes=dataset.info.classes,
        input_size=plan.model.input_size,
        in_chans=in_chans,
        mean=mean,
        std=std,
        dataset_version=dataset.info.version_id,
        plan_digest=plan.digest(),
    )
    model = model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    artifacts = save_trained_model(model_dir, model, info)
    artifacts[HISTORY_FILE] = storage.write_text(f"{model_dir}/{HISTORY_FILE}", json.dumps(summaries, indent=2))
    metrics = {
        "best_val_accuracy": best.accuracy,
        "best_epoch": float(best.epoch),
        "train_seconds": train_seconds,
        "num_stages": float(len(stages)),
    }
    for summary in summaries:
        for key in ("trainable_params", "trainable_share", "best_val_accuracy", "seconds"):
            metrics[f"stage_{summary['stage']}_{key}"] = summary[key]
    return TrainResult(metrics=metrics, stages=summaries, artifacts=artifacts, info=info)
