"""Per-step overhead of rooivalk's `Trainer` against a minimal hand-written PyTorch loop.

Both loops train the same architecture (two instances with identical initial weights), on the same
uint8 batches, with the same batch size, threads, memory format, loss (cross-entropy, label
smoothing 0.1), gradient clipping (norm 1.0), AdamW and a per-step LR schedule, every layer group
trainable. Rooivalk's side is the real loop: a `Trainer` built the way `train_model` builds it,
driven through `Trainer.train_step` after `enter_stage(0)`; augmentation is off on both sides (the
baseline has none). After a warm-up the two run in alternating blocks of `--steps` steps for
`--rounds` rounds (the order flips every round), so machine noise falls on both alike; each step is
timed on its own and the medians are compared: `ratio = rooivalk / baseline`, target <= 1.05.

Defaults (tf_efficientnet_lite0, 48 px, batch 64, 5 rounds x 20 steps): ~220 timed and warm-up steps
at ~0.12 s each on 2 idle cores (ENVIRONMENT.md: 536 images/s full fine-tune at 48 px), about 30-60 s
in all.

    .venv/bin/python benchmarks/trainer_overhead.py
    .venv/bin/python benchmarks/trainer_overhead.py --architecture test_efficientnet --input-size 32
"""

from __future__ import annotations

import argparse
import json
import math
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
from rooivalk.models import create_model, layer_groups, normalization
from rooivalk.plan import AugmentSpec, ModelSpec, StageLR, StageSpec, TrainingSpec
from rooivalk.training.loop import InputSpec, TrainData, Trainer
from rooivalk.training.optim import WARMUP_START_FACTOR
from rooivalk.training.stages import resolve_stages
from rooivalk.training.state import augment_generator

TARGET = 1.05
NUM_CLASSES = 10
LR = 1e-3
WEIGHT_DECAY = 0.05
LABEL_SMOOTHING = 0.1
CLIP_NORM = 1.0

StepFn = Callable[[np.ndarray, np.ndarray], float]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    parser.add_argument("--rounds", type=int, default=5, help="alternating blocks per loop")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per loop before the first round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--architecture", default="tf_efficientnet_lite0")
    parser.add_argument("--input-size", type=int, default=48)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batches", type=int, default=8, help="distinct random batches, reused in turn")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def make_model(architecture: str, input_size: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)  # both loops start from the same weights
    model = create_model(ModelSpec(architecture=architecture, input_size=input_size), NUM_CLASSES)
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def in_channels(model: nn.Module) -> int:
    return int(getattr(model, "pretrained_cfg", {}).get("input_size", (3,))[0])


def rooivalk_step(args: argparse.Namespace, data: TrainData, total_steps: int) -> StepFn:
    """`Trainer.train_step` on a Trainer wired as `train_model` wires it: one all-groups stage."""
    spec = TrainingSpec(
        batch_size=args.batch_size,
        threads=args.threads,
        augment=AugmentSpec(hflip=0.0),
        grad_clip_norm=CLIP_NORM,
        seed=args.seed,
    )
    # Enough epochs of the batch pool that the stage's cosine schedule spans every benchmark step.
    epochs = math.ceil(total_steps / args.batches)
    stage = StageSpec(name="all", epochs=epochs, train=["all"], lr=StageLR(spread=(LR, LR)))
    model = make_model(args.architecture, args.input_size, args.seed)
    mean, std = normalization(model)
    groups = layer_groups(model)
    inputs = InputSpec(args.input_size, in_channels(model), mean, std, channels_last=True)
    trainer = Trainer(
        model, groups, resolve_stages([stage], groups), data, inputs, spec, lambda _: None, lambda *_: None, _no_save
    )
    trainer.enter_stage(0)
    trainer.epoch_rng = augment_generator(spec.seed, 0)  # what run_epoch sets before its steps
    model.train()
    return trainer.train_step


def _no_save(*_: Any) -> None:
    return None


def baseline_step(args: argparse.Namespace, total_steps: int) -> StepFn:
    """The loop a person writes by hand: no stages, no param groups, no checks."""
    model = make_model(args.architecture, args.input_size, args.seed)
    mean, std = normalization(model)
    chans = in_channels(model)
    criterion = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    warmup = max(1, round(0.05 * total_steps))
    scheduler = torch.optim.lr_scheduler.SequentialLR(
        optimizer,
        [
            torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=WARMUP_START_FACTOR, total_iters=warmup),
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps - warmup, 1)),
        ],
        milestones=[warmup],
    )
    model.train()

    def step(images: np.ndarray, labels: np.ndarray) -> float:
        batch = to_model_input(images, args.input_size, mean, std, chans, channels_last=True)
        loss = criterion(model(batch), torch.as_tensor(labels))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
        optimizer.step()
        scheduler.step()
        return float(loss.detach())

    return step


def run_block(step: StepFn, batches: list[tuple[np.ndarray, np.ndarray]], start: int, count: int) -> list[float]:
    """Seconds of each of `count` steps, cycling through the batches from `start`."""
    times = []
    for offset in range(count):
        images, labels = batches[(start + offset) % len(batches)]
        began = time.perf_counter()
        step(images, labels)
        times.append(time.perf_counter() - began)
    return times


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    pool = args.batches * args.batch_size
    images = rng.integers(0, 256, size=(pool, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, size=pool).astype(np.int64)
    labels[:NUM_CLASSES] = np.arange(NUM_CLASSES)  # every class present (the Trainer counts them)
    data = TrainData((images, labels), (images[:1], labels[:1]), NUM_CLASSES)
    # Both loops slice the same pool per step, as run_epoch slices the training split.
    cuts = [slice(i * args.batch_size, (i + 1) * args.batch_size) for i in range(args.batches)]
    batches = [(images[cut], labels[cut]) for cut in cuts]
    total_steps = args.warmup + args.rounds * args.steps
    loops = {"rooivalk": rooivalk_step(args, data, total_steps), "baseline": baseline_step(args, total_steps)}
    for step in loops.values():
        run_block(step, batches, 0, args.warmup)
    times: dict[str, list[float]] = {name: [] for name in loops}
    round_medians: dict[str, list[float]] = {name: [] for name in loops}
    for round_index in range(args.rounds):
        order = list(loops) if round_index % 2 == 0 else list(reversed(loops))
        for name in order:
            block = run_block(loops[name], batches, args.warmup + round_index * args.steps, args.steps)
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
