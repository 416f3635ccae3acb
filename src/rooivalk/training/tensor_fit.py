"""Stage-by-stage training of non-image sensor models (RF, radar, acoustic) and of the fusion model.

Images have their own trainer (rooivalk.training.loop: augmentation, channels_last, cached head
stages, budgets, checkpoints). Sensor models take preprocessed arrays, so this loop is the plain
part of it, built from the same pieces: plan stages resolved on the model's layer groups,
freezing (frozen groups get no gradient and keep BatchNorm statistics), per-group LRs, one torch
LR schedule per stage (`StageSchedule`: warmup + cosine, etc.), the plan's loss, gradient clipping,
and the best validation epoch kept. Frozen groups cost no backward pass: their parameters do not
require grad and the inputs never do, so autograd starts at the first trainable layer.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from rooivalk.models.groups import layer_groups
from rooivalk.plan_training import TrainingSpec
from rooivalk.training.freezing import freeze_batchnorm_of_frozen, param_groups_for, set_trainable
from rooivalk.training.losses import build_loss
from rooivalk.training.optim import StageSchedule, build_optimizer
from rooivalk.training.stages import model_stages

Batch = dict[str, torch.Tensor]
# Runs the model on a batch of inputs (a dict of tensors) and returns logits; the fusion model needs
# several inputs and a generator, a sensor model one tensor.
Forward = Callable[[nn.Module, Batch], torch.Tensor]
Progress = Callable[[dict[str, Any]], None]


def single_input(model: nn.Module, batch: Batch) -> torch.Tensor:
    return model(batch["inputs"])  # type: ignore[no-any-return]


@dataclass
class FitResult:
    best_val_accuracy: float
    best_epoch: int  # 1-based over all stages
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    stages: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _batches(arrays: dict[str, np.ndarray], order: np.ndarray, size: int) -> Iterator[Batch]:
    """Batches in `order`, gathered one at a time (never a second copy of the whole split)."""
    for i in range(0, len(order), size):
        yield {
            name: torch.from_numpy(np.ascontiguousarray(array[order[i : i + size]])) for name, array in arrays.items()
        }


@torch.no_grad()
def predict_logits(model: nn.Module, arrays: dict[str, np.ndarray], forward: Forward, batch_size: int) -> torch.Tensor:
    model.eval()
    count = len(next(iter(arrays.values())))
    outputs = [forward(model, batch) for batch in _batches(arrays, np.arange(count), batch_size)]
    return torch.cat(outputs) if outputs else torch.empty(0)


def fit_tensor_model(
    model: nn.Module,
    train: dict[str, np.ndarray],
    train_labels: np.ndarray,
    val: dict[str, np.ndarray],
    val_labels: np.ndarray,
    training: TrainingSpec,
    pretrained: bool = False,
    forward: Forward = single_input,
    progress: Progress | None = None,
    name: str = "model",
) -> FitResult:
    """Train `model` in place through the plan's stages; leaves it at its best validation epoch."""
    if any(stage.epochs is None for stage in training.stages or []):
        raise ValueError(f"{name}: sensor models take stages sized in epochs (seconds budgets are for images)")
    resized = [stage.name for stage in training.stages or [] if stage.input_size is not None]
    if resized:
        raise ValueError(f"{name}: stages {resized} set input_size, which only image models have")
    torch.manual_seed(training.seed)
    generator = np.random.default_rng(training.seed)
    groups = layer_groups(model)
    stages = model_stages(training, pretrained, groups)
    loss_fn = build_loss(training.loss, np.bincount(train_labels, minlength=int(train_labels.max()) + 1))
    best = FitResult(best_val_accuracy=-1.0, best_epoch=0)
    best_state = copy.deepcopy(model.state_dict())
    started = time.perf_counter()
    epoch_counter = 0
    previous: set[str] = set()
    arrays = {**train, "labels": train_labels}
    steps_per_epoch = -(-len(train_labels) // training.batch_size)
    for stage in stages:
        trainable = set(stage.group_lrs)
        set_trainable(model, groups, trainable)
        param_groups = [
            pg
            for group in groups
            if group.name in trainable
            for pg in param_groups_for(model, group, stage.group_lrs[group.name], training.optimizer.weight_decay)
        ]
        optimizer = build_optimizer(stage.optimizer or training.optimizer, param_groups)
        epochs = int(stage.epochs or training.epochs)
        schedule = StageSchedule(
            stage.scheduler or training.scheduler,
            optimizer,
            steps_per_epoch,
            epochs,
            stage.warmup_epochs,
            new_groups=frozenset(trainable - previous) if previous else frozenset(),
        )
        params = [p for p in model.parameters() if p.requires_grad]
        stage_started = time.perf_counter()
        for epoch in range(1, epochs + 1):
            model.train()
            freeze_batchnorm_of_frozen(model, groups, trainable)
            losses = []
            for batch in _batches(arrays, generator.permutation(len(train_labels)), training.batch_size):
                labels = batch.pop("labels")
                loss = loss_fn(forward(model, batch), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if training.grad_clip_norm:
                    nn.utils.clip_grad_norm_(params, training.grad_clip_norm)
                optimizer.step()
                schedule.step_batch()
                losses.append(loss.item())
            logits = predict_logits(model, val, forward, training.eval_batch_size)
            accuracy = float((logits.argmax(1).numpy() == val_labels).mean())
            schedule.step_epoch(accuracy)
            epoch_counter += 1
            row = {"stage": stage.name, "epoch": epoch_counter, "train_loss": float(np.mean(losses)),
                   "val_accuracy": accuracy, "seconds": time.perf_counter() - started}  # fmt: skip
            best.history.append(row)
            if progress is not None:
                progress({**row, "event": "epoch_end", "model": name, "epoch": epoch, "epochs": epochs})
            if accuracy > best.best_val_accuracy:
                best.best_val_accuracy, best.best_epoch = accuracy, epoch_counter
                best_state = copy.deepcopy(model.state_dict())
        best.stages.append(
            {
                "name": stage.name,
                "epochs": epochs,
                "groups": sorted(trainable),
                "lrs": stage.group_lrs,
                "seconds": time.perf_counter() - stage_started,
            }  # fmt: skip
        )
        previous = trainable
    model.load_state_dict(best_state)
    set_trainable(model, groups, {g.name for g in groups})
    best.seconds = time.perf_counter() - started
    return best
