"""`rooivalk lr-find`: an LR range test (Smith 2017, "Cyclical Learning Rates"; fastai's lr_find).

The LR grows exponentially from `start` to `end` over `steps` optimizer steps (torch's ExponentialLR)
on one stage of the plan, from the pretrained model; the loss is smoothed with a bias-corrected
exponential moving average, and the test stops early once it exceeds 4x its minimum. The suggested
top LR is where the smoothed loss falls fastest against log LR; `min_loss_lr / 10` is the other
common rule and is reported beside it. A stage's per-group LRs keep their ratios: the sweep scales
all of them so that the stage's highest LR follows the sweep.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.optim import lr_scheduler

from rooivalk.data.dataset import load_dataset
from rooivalk.events import ProgressFn
from rooivalk.plan import ARRAY_FORMATS, DETECTION_FORMATS, Plan, SchedulerSpec
from rooivalk.training.array_training import array_trainer
from rooivalk.training.detection_training import detector_trainer
from rooivalk.training.engine.optim import StageSchedule
from rooivalk.training.engine.runtime import noop, seed_everything, training_device
from rooivalk.training.engine.state import epoch_generator, step_generator
from rooivalk.training.image_training import build_trainer

SMOOTHING = 0.98
DIVERGENCE = 4.0


@dataclass
class LRFindResult:
    stage: str
    lrs: list[float]  # the highest group LR at each step
    losses: list[float]
    smoothed: list[float]
    suggested_lr: float  # steepest descent of the smoothed loss
    min_loss_lr: float  # the LR at the smoothed loss's minimum
    diverged: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def steepest_descent_lr(lrs: list[float], smoothed: list[float]) -> float:
    """The LR where d(smoothed loss)/d(log LR) is most negative, ignoring the noisy first tenth
    and everything after the minimum."""
    lowest = int(np.argmin(smoothed))
    skip = max(len(lrs) // 10, 1)
    if lowest - skip < 2:
        return lrs[lowest]
    window = slice(skip, lowest + 1)
    slope = np.gradient(np.asarray(smoothed[window]), np.log(np.asarray(lrs[window])))
    return float(lrs[skip + int(np.argmin(slope))])


def find_lr(
    plan: Plan,
    dataset_dir: str,
    stage: str | None = None,
    steps: int = 100,
    start: float = 1e-7,
    end: float = 1.0,
    progress: ProgressFn | None = None,
) -> LRFindResult:
    """Run the range test on `stage` (default: the plan's last stage, where most steps are spent)."""
    if not 0 < start < end:
        raise ValueError(f"lr-find: need 0 < start < end, got start={start}, end={end}")
    if steps < 10:
        raise ValueError(f"lr-find: steps must be >= 10, got {steps}")
    if plan.variants is not None:  # members may override the architecture or the LRs the test would pick
        raise ValueError("lr-find: a variants plan trains several models; run it on a member's plan instead")
    spec = plan.training
    seed_everything(spec.seed, False)
    torch.set_num_threads(spec.threads or torch.get_num_threads())
    device = training_device(spec.precision)
    if plan.data.format in ARRAY_FORMATS:  # an rnn or mlp model of a sequence or table plan
        trainer = array_trainer(plan, dataset_dir, device, progress or noop, noop)
    elif plan.data.format in DETECTION_FORMATS:
        trainer = detector_trainer(plan, dataset_dir, device, progress or noop, noop)
    else:
        trainer = build_trainer(plan, load_dataset(dataset_dir), device, progress or noop, noop)
    names = [s.name for s in trainer.stages]
    index = len(names) - 1 if stage is None else (names.index(stage) if stage in names else -1)
    if index < 0:
        raise ValueError(f"lr-find --stage {stage!r}: the plan's stages are {names}")
    chosen = trainer.stages[index]
    trainer.position.stage_index = index
    trainer.enter_stage(index, steps=steps)
    optimizer = trainer.optimizer
    assert optimizer is not None  # enter_stage built it
    top = max(chosen.group_lrs.values())
    for group in optimizer.param_groups:  # keep the stage's ratios, start the highest at `start`
        base = chosen.group_lrs.get(group["group"], min(chosen.group_lrs.values()))  # (affine_early BN: lowest)
        group["lr"] = base / top * start
    # The sweep alone moves the LR: the stage's own schedule is swapped for a constant one.
    trainer.schedule = StageSchedule(SchedulerSpec(name="constant"), optimizer, 1, 1)
    sweep = lr_scheduler.ExponentialLR(optimizer, gamma=(end / start) ** (1 / (steps - 1)))
    trainer.model.train()
    count, bs = trainer.samples_per_epoch(), trainer.rank_batch_size
    order = torch.randperm(count, generator=epoch_generator(spec.seed, 0))
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, best, diverged = 0.0, math.inf, False
    for step in range(steps):
        positions = order[(step * bs) % max(count - bs, 1) :][:bs].sort().values.numpy()
        lr = max(g["lr"] for g in optimizer.param_groups)
        loss = trainer.train_step(chosen, positions, step_generator(spec.seed, step, 0))
        sweep.step()
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        value = average / (1 - SMOOTHING ** (step + 1))
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(value)
        best = min(best, value)
        (progress or noop)({"event": "batch", "batch": step + 1, "lr": lr, "loss": value})
        if not math.isfinite(value) or value > DIVERGENCE * best:
            diverged = True
            break
    lowest = int(np.nanargmin(smoothed))
    return LRFindResult(
        chosen.name, lrs, losses, smoothed, steepest_descent_lr(lrs, smoothed), lrs[lowest] / 10, diverged
    )


def plot_lr_find(result: LRFindResult, path: str) -> None:
    """Smoothed loss against LR (log axis) with both suggestions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(result.lrs, result.losses, color="0.8", lw=0.8, label="loss")
    ax.plot(result.lrs, result.smoothed, label="smoothed loss")
    ax.axvline(result.suggested_lr, color="C1", ls="--", label=f"steepest: {result.suggested_lr:.1e}")
    ax.axvline(result.min_loss_lr, color="C2", ls=":", label=f"min/10: {result.min_loss_lr:.1e}")
    ax.set_xscale("log")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    ax.set_ylim(min(finite) * 0.9, min(max(finite), 3 * min(finite)))
    ax.set_xlabel(f"highest LR of stage {result.stage!r}")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
