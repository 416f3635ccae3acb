"""Per-step overhead of rooivalk's `Trainer` against a minimal hand-written PyTorch loop.

Both loops train the same architecture (two instances with identical initial weights) on the same
pool of uint8 images, with the same batch size, threads, memory format, loss (cross-entropy, label
smoothing 0.1), gradient clipping (norm 1.0), AdamW and per-step LR schedule, every layer group
trainable, each step gathering a sorted random batch from the pool. Rooivalk's AdamW takes the plan's
default fused update; `--optimizer-kernels foreach` gives it torch's default foreach update, which the
hand-written loop always uses. Rooivalk's side is the real loop: a `Trainer` built the way
`train_model` builds it, `enter_stage(0)`, then `run_epoch` with
`max_train_batches = --steps`, so a block is one epoch; each step is timed between the loop's own
per-batch progress events (validation and checkpointing at the end of an epoch are not per-step
costs and fall outside). Augmentation is off on both sides (the baseline has none). After a warm-up
block each, the two run in alternating blocks of `--steps` steps for `--rounds` rounds (the order
flips every round), so machine noise falls on both alike; `ratio = rooivalk / baseline` of the
median step times, target <= 1.05.

Defaults (tf_efficientnet_lite0, 48 px, batch 64, 5 rounds x 20 steps + 1 warm-up block): 240 steps
at ~0.12 s on 2 idle cores (ENVIRONMENT.md: 536 images/s full fine-tune at 48 px), ~30-60 s in all.

    .venv/bin/python benchmarks/trainer_overhead.py
    .venv/bin/python benchmarks/trainer_overhead.py --architecture test_efficientnet --input-size 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from rooivalk.data.transforms import to_model_input
from rooivalk.models import create_model, input_channels, layer_groups, normalization
from rooivalk.plan import AugmentSpec, ModelSpec, OptimizerSpec, StageLR, StageSpec, TrainingSpec
from rooivalk.training.loop import TrainData, Trainer
from rooivalk.training.optim import WARMUP_START_FACTOR
from rooivalk.training.stages import resolve_stages
from rooivalk.training.validation import InputSpec

TARGET = 1.05
NUM_CLASSES = 10
LR = 1e-3
WEIGHT_DECAY = 0.05
LABEL_SMOOTHING = 0.1
CLIP_NORM = 1.0

BlockFn = Callable[[int], list[float]]  # block index -> seconds of each of its steps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    parser.add_argument("--rounds", type=int, default=5, help="timed blocks per loop, alternating")
    parser.add_argument("--warmup", type=int, default=1, help="untimed blocks per loop before the first round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--architecture", default="tf_efficientnet_lite0")
    parser.add_argument("--input-size", type=int, default=48)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--optimizer-kernels",
        choices=("fused", "foreach"),
        default="fused",
        help="rooivalk's AdamW update (training.optimizer.fused); the baseline keeps torch's default, foreach",
    )
    return parser.parse_args(argv)


def make_model(architecture: str, input_size: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)  # both loops start from the same weights
    model: nn.Module = create_model(ModelSpec(architecture=architecture, input_size=input_size), NUM_CLASSES)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # in place, like train_model
    return model


class StepClock:
    """A progress callback that times each step between the loop's own events: an epoch's first
    step from its "epoch" event, every later one from the previous "batch" event."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._last: float | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        now = time.perf_counter()
        if event.get("event") == "epoch":
            self._last = now
        elif event.get("event") == "batch" and self._last is not None:
            self.times.append(now - self._last)
            self._last = now


def rooivalk_blocks(args: argparse.Namespace, data: TrainData, blocks: int) -> BlockFn:
    """Epochs of a Trainer wired as `train_model` wires it: one all-groups stage of `blocks` epochs."""
    spec = TrainingSpec(
        batch_size=args.batch_size,
        threads=args.threads,
        augment=AugmentSpec(hflip=0.0),
        grad_clip_norm=CLIP_NORM,
        seed=args.seed,
        max_train_batches=args.steps,
        optimizer=OptimizerSpec(fused=args.optimizer_kernels == "fused"),
    )
    stage = StageSpec(name="all", epochs=blocks, train=["all"], lr=StageLR(spread=(LR, LR)))
    model = make_model(args.architecture, args.input_size, args.seed)
    mean, std = normalization(model)
    groups = layer_groups(model)
    clock = StepClock()
    trainer = Trainer(
        model=model,
        groups=groups,
        stages=resolve_stages([stage], groups),
        data=data,
        inputs=InputSpec(args.input_size, input_channels(model), mean, std, channels_last=True),
        spec=spec,
        progress=clock,
        log_metrics=lambda *_: None,
        save=lambda *_: None,
    )
    trainer.enter_stage(0)

    def block(_: int) -> list[float]:
        clock.times = []
        trainer.run_epoch(trainer.stages[0])
        return clock.times

    return block


def baseline_blocks(args: argparse.Namespace, data: TrainData, blocks: int) -> BlockFn:
    """The loop a person writes by hand: no stages, no param groups, no checks."""
    model = make_model(args.architecture, args.input_size, args.seed)
    mean, std = normalization(model)
    chans = input_channels(model)
    images, labels = data.train
    criterion = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    total = blocks * args.steps
    warmup = max(1, round(0.05 * total))
    scheduler = torch.optim.lr_scheduler.SequentialLR(
        optimizer,
        [
            torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=WARMUP_START_FACTOR, total_iters=warmup),
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total - warmup, 1)),
        ],
        milestones=[warmup],
    )

    def block(index: int) -> list[float]:
        model.train()
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed * 1_000_003 + index))
        times = []
        for step in range(args.steps):
            began = time.perf_counter()
            batch_index = order[step * args.batch_size : (step + 1) * args.batch_size].sort().values.numpy()
            batch = to_model_input(images[batch_index], args.input_size, mean, std, chans, channels_last=True)
            loss = criterion(model(batch), torch.as_tensor(labels[batch_index]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
            optimizer.step()
            scheduler.step()
            float(loss.detach())  # the loss as a number, as every loop logs it
            times.append(time.perf_counter() - began)
        return times

    return block


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    pool = 2 * args.steps * args.batch_size  # each block draws a random half of the pool
    images = rng.integers(0, 256, size=(pool, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, size=pool).astype(np.int64)
    data = TrainData((images, labels), (images[:1], labels[:1]), NUM_CLASSES)
    blocks = args.warmup + args.rounds
    loops = {"rooivalk": rooivalk_blocks(args, data, blocks), "baseline": baseline_blocks(args, data, blocks)}
    for index in range(args.warmup):
        for run in loops.values():
            run(index)
    times: dict[str, list[float]] = {name: [] for name in loops}
    round_medians: dict[str, list[float]] = {name: [] for name in loops}
    for round_index in range(args.rounds):
        order = list(loops) if round_index % 2 == 0 else list(reversed(loops))
        for name in order:
            block = loops[name](args.warmup + round_index)
            if len(block) != args.steps:
                raise RuntimeError(f"{name}: timed {len(block)} steps in a block of {args.steps}")
            times[name].extend(block)
            round_medians[name].append(statistics.median(block) * 1e3)
    rooivalk_ms = statistics.median(times["rooivalk"]) * 1e3
    baseline_ms = statistics.median(times["baseline"]) * 1e3
    ratio = rooivalk_ms / baseline_ms
    return {
        "benchmark": "trainer_overhead",
        "rooivalk_step_ms": round(rooivalk_ms, 3),
        "baseline_step_ms": round(baseline_ms, 3),
        "ratio": round(ratio, 4),
        "target": TARGET,
        "passed": ratio <= TARGET,
        # Robust to load that drifts between rounds: each round's pair compared on its own.
        "paired_round_ratio": round(
            statistics.median(a / b for a, b in zip(round_medians["rooivalk"], round_medians["baseline"], strict=True)),
            4,
        ),
        "rooivalk_round_medians_ms": [round(v, 3) for v in round_medians["rooivalk"]],
        "baseline_round_medians_ms": [round(v, 3) for v in round_medians["baseline"]],
        "images_per_second_rooivalk": round(args.batch_size / (rooivalk_ms / 1e3), 1),
        "images_per_second_baseline": round(args.batch_size / (baseline_ms / 1e3), 1),
        "architecture": args.architecture,
        "input_size": args.input_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "threads": args.threads,
        "rooivalk_optimizer_kernels": args.optimizer_kernels,
        "channels_last": True,
        "augment": False,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure(args)
    print(
        f"rooivalk {result['rooivalk_step_ms']:.1f} ms/step, baseline {result['baseline_step_ms']:.1f} ms/step, "
        f"ratio {result['ratio']:.3f} (target <= {TARGET})",
        file=sys.stderr,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
