"""One stage of training: freeze/unfreeze, optimizer and scheduler, the epoch loop, validation."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from rooivalk.data.transforms import to_model_input
from rooivalk.models.groups import LayerGroup
from rooivalk.plan import TrainingSpec
from rooivalk.training.stages import ResolvedStage

ProgressFn = Callable[[dict[str, Any]], None]
MetricsFn = Callable[[dict[str, float], int], None]


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the message names stage, epoch and step."""


@dataclass
class InputSpec:
    input_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels_last: bool

    def __call__(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        return to_model_input(images, self.input_size, self.mean, self.std, self.in_chans, self.channels_last)


@dataclass
class BestState:
    accuracy: float = -1.0
    epoch: int = -1
    stage: str = ""
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)


def set_trainable(model: nn.Module, groups: list[LayerGroup], trainable: set[str]) -> int:
    """requires_grad per group; returns the number of trainable parameters."""
    params = dict(model.named_parameters())
    for group in groups:
        for name in group.param_names:
            params[name].requires_grad_(group.name in trainable)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freeze_batchnorm_of_frozen(model: nn.Module, groups: list[LayerGroup], trainable: set[str]) -> None:
    """BatchNorm in frozen groups stays in eval mode: keeps its pretrained running statistics."""
    modules = dict(model.named_modules())
    for group in groups:
        if group.name in trainable:
            continue
        for name in group.module_names:
            module = modules.get(name)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def build_optimizer(
    model: nn.Module, groups: list[LayerGroup], stage: ResolvedStage, weight_decay: float
) -> torch.optim.Optimizer:
    """AdamW with one param group per (layer group, decay/no-decay); biases and norms get no decay."""
    params = dict(model.named_parameters())
    param_groups = []
    for group in groups:
        if group.name not in stage.group_lrs:
            continue
        decay = [params[n] for n in group.param_names if params[n].ndim > 1]
        no_decay = [params[n] for n in group.param_names if params[n].ndim <= 1]
        lr = stage.group_lrs[group.name]
        for tensors, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if tensors:
                param_groups.append({"params": tensors, "lr": lr, "weight_decay": wd, "group": group.name})
    return torch.optim.AdamW(param_groups)


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warmup then cosine decay to zero, per optimizer step (torch's own schedulers)."""
    warmup_steps = min(max(warmup_steps, 0), max(total_steps - 1, 0))
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps - warmup_steps, 1))
    if warmup_steps == 0:
        return cosine
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-2, end_factor=1.0, total_iters=warmup_steps)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])


@torch.inference_mode()
def evaluate(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, inputs: InputSpec, batch_size: int
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over a split."""
    model.eval()
    correct, loss_sum = 0, 0.0
    labels_t = torch.as_tensor(labels)
    for start in range(0, len(images), batch_size):
        logits = model(inputs(images[start : start + batch_size])).float()
        target = labels_t[start : start + batch_size]
        loss_sum += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(1) == target).sum())
    count = max(len(images), 1)
    return correct / count, loss_sum / count


@dataclass
class StageRun:
    model: nn.Module
    groups: list[LayerGroup]
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    inputs: InputSpec
    spec: TrainingSpec
    progress: ProgressFn
    log_metrics: MetricsFn
    global_epoch: int = 0


def _augment(batch: torch.Tensor, generator: torch.Generator, hflip: bool) -> torch.Tensor:
    if not hflip:
        return batch
    flip = torch.rand(batch.shape[0], generator=generator) < 0.5  # (B,)
    return torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)


def run_stage(run: StageRun, stage: ResolvedStage, stage_index: int, best: BestState) -> dict[str, float]:
    """Train one stage; update `best` in place; return the stage's summary metrics."""
    model, spec = run.model, run.spec
    trainable = set(stage.group_lrs)
    trainable_params = set_trainable(model, run.groups, trainable)
    total_params = sum(p.numel() for p in model.parameters())
    images, labels = run.train
    batches_per_epoch = math.ceil(len(images) / spec.batch_size)
    if spec.max_train_batches:
        batches_per_epoch = min(batches_per_epoch, spec.max_train_batches)
    total_steps = batches_per_epoch * stage.epochs
    warmup = stage.warmup_epochs * batches_per_epoch if stage.warmup_epochs else spec.warmup_fraction * total_steps
    optimizer = build_optimizer(model, run.groups, stage, spec.weight_decay)
    scheduler = build_scheduler(optimizer, total_steps, int(warmup))
    criterion = nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing)
    labels_t = torch.as_tensor(labels)
    run.progress(
        {
            "event": "stage",
            "stage": stage.name,
            "index": stage_index,
            "epochs": stage.epochs,
            "trainable_params": trainable_params,
            "groups": list(stage.group_lrs),
        }
    )
    started = time.perf_counter()
    stage_best = -1.0
    for epoch in range(stage.epochs):
        model.train()
        freeze_batchnorm_of_frozen(model, run.groups, trainable)
        generator = torch.Generator().manual_seed(spec.seed * 100_003 + run.global_epoch)
        order = torch.randperm(len(images), generator=generator)[: batches_per_epoch * spec.batch_size]
        run.progress(
            {
                "event": "epoch",
                "stage": stage.name,
                "epoch": epoch + 1,
                "epochs": stage.epochs,
                "batches": batches_per_epoch,
            }
        )
        loss_sum, seen, epoch_start = 0.0, 0, time.perf_counter()
        lr_at_start = max(g["lr"] for g in optimizer.param_groups)  # the cosine ends each stage at 0
        for step in range(batches_per_epoch):
            index = order[step * spec.batch_size : (step + 1) * spec.batch_size].sort().values.numpy()
            batch = _augment(run.inputs(images[index]), generator, spec.hflip)
            loss = criterion(model(batch), labels_t[index])
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"non-finite loss {loss.item()} in stage {stage.name!r}, epoch {epoch + 1}, step {step + 1}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if spec.grad_clip_norm:
                nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], spec.grad_clip_norm)
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(index)
            seen += len(index)
            run.progress({"event": "batch", "batch": step + 1})
        train_seconds = time.perf_counter() - epoch_start
        val_accuracy, val_loss = evaluate(model, *run.val, run.inputs, spec.eval_batch_size)
        run.global_epoch += 1
        metrics = {
            "train_loss": loss_sum / max(seen, 1),
            "val_accuracy": val_accuracy,
            "val_loss": val_loss,
            "epoch_seconds": train_seconds,
            "images_per_second": seen / max(train_seconds, 1e-9),
            "lr_at_epoch_start": lr_at_start,
            "stage_index": stage_index,
        }
        run.log_metrics(metrics, run.global_epoch)
        run.progress({"event": "epoch_end", "stage": stage.name, "epoch": epoch + 1, "epochs": stage.epochs, **metrics})
        stage_best = max(stage_best, val_accuracy)
        if val_accuracy > best.accuracy:
            best.accuracy, best.epoch, best.stage = val_accuracy, run.global_epoch, stage.name
            best.state_dict = copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})
    return {
        "trainable_params": float(trainable_params),
        "trainable_share": trainable_params / total_params,
        "best_val_accuracy": stage_best,
        "seconds": time.perf_counter() - started,
        "epochs": float(stage.epochs),
    }
