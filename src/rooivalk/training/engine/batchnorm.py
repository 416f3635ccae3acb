"""BatchNorm around unfreezing: re-estimating running statistics on target data, and training the
affine parameters of frozen groups early.

A pretrained group's BatchNorm holds statistics of the pretraining data (224 px colour ImageNet for
the reference backbones). Frozen, it keeps normalizing with them; unfrozen, it switches to batch
statistics of very different inputs, and accuracy drops at each unfreeze (measured in
ENVIRONMENT.md). `recalibrate` re-estimates every running mean/var on target batches before
training (AdaBN, Li et al. 2016) with torch's own `swa_utils.update_bn`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from rooivalk.models.groups import LayerGroup
from rooivalk.training.engine.engine_view import EngineView as Trainer


class _Forward(nn.Module):
    """`forward(inputs)` as a module, so torch's update_bn can drive a task's forward (fusion takes a dict)."""

    def __init__(self, model: nn.Module, forward: Callable[[Any], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.run = forward

    def forward(self, inputs: Any) -> torch.Tensor:
        return self.run(inputs)


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Any], forward: Callable[[Any], torch.Tensor]) -> int:
    """Reset and re-estimate the running statistics of every BatchNorm as a cumulative average over
    `batches` (model inputs on the model's device), run through `forward`; no weight changes.
    Returns the number of BN layers."""
    layers = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    was_training = model.training
    with torch.no_grad():
        update_bn(batches, _Forward(model, forward))  # sets train mode, restores momentum afterwards
    model.train(was_training)
    return layers


def batchnorm_affine_names(model: nn.Module, group: LayerGroup) -> list[str]:
    """Parameter names of the BatchNorm weights and biases inside one layer group."""
    modules = dict(model.named_modules())
    wanted = set(group.param_names)
    names = []
    for module_name in group.module_names:
        module = modules.get(module_name)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            for param_name, _ in module.named_parameters(recurse=False):
                full = f"{module_name}.{param_name}" if module_name else param_name
                if full in wanted:
                    names.append(full)
    return names


def recalibrate_before_training(trainer: Trainer) -> None:
    """bn_unfreeze: recalibrate: before the first step, re-estimate every BatchNorm's running
    statistics on unaugmented training batches, when the first stage leaves groups frozen. Every
    rank uses the same batches, so the statistics agree without communication; a resumed run
    (position says it was done) does not redo it."""
    pos, spec = trainer.position, trainer.spec
    if pos.bn_recalibrated or pos.global_step > 0 or spec.bn_unfreeze != "recalibrate":
        return
    pos.bn_recalibrated = True
    if set(trainer.stages[0].group_lrs) == {g.name for g in trainer.groups}:
        return  # nothing frozen: every BatchNorm updates its own statistics from the first step
    count = min(len(trainer.task.train_labels), spec.bn_recalibration_batches * spec.batch_size)
    order = torch.randperm(len(trainer.task.train_labels), generator=torch.Generator().manual_seed(spec.seed))
    index = order[:count].sort().values.numpy()
    batches = trainer.task.statistics_batches(index, trainer.stages[0], spec.batch_size, trainer.device)
    started = time.perf_counter()
    layers = recalibrate_batchnorm(trainer.model, batches, functools.partial(trainer.task.forward, trainer.model))
    trainer.progress(
        {
            "event": "message",
            "text": f"re-estimated {layers} BatchNorm layers' statistics on {count} training samples "
            f"in {time.perf_counter() - started:.1f} s",
        }
    )
