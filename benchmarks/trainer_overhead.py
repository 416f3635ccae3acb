"""Per-step overhead of rooivalk's `Trainer` against a minimal hand-written PyTorch loop, per task.

Two comparisons in one run, each of two instances of one architecture with identical initial weights
trained on the same pool of samples, with the same batch size, threads, loss (cross-entropy, label
smoothing 0.1), gradient clipping (norm 1.0), AdamW and per-step LR schedule (linear warmup, cosine),
every layer group trainable, each step gathering a sorted random batch from the pool in the same
order on both sides (the engine's epoch order: `epoch_generator(seed, epoch)`):

- image: an image model (tf_efficientnet_lite0, 48 px, channels_last) on uint8 images through
  `ImageClassification`. Rooivalk's AdamW takes the plan's default fused update (`--optimizer-kernels
  foreach`: torch's default foreach update); the hand-written loop keeps torch's default, foreach, as
  in the earlier runs of this script (docs/results/trainer_overhead/trainer_overhead_kernels.jsonl).
- tensor: the RF sensor model (rf_cnn_transformer small, drop_rate 0.1: what the counter-drone plan
  trains) on float32 (N, 2, 4096) IQ through `TensorClassification`. The hand-written loop builds
  its AdamW as the engine does (rooivalk.training.engine.optim.build_optimizer: fused unless
  `--optimizer-kernels foreach`), over one param group.

Rooivalk's side is the real loop: a `Trainer` built the way `fit_model` builds it (model, groups,
stages, task, spec), `enter_stage(0)`, then `run_epoch` with `max_train_batches = --steps`, so a
block is one epoch; each step is timed between the loop's own per-batch progress events (validation
and checkpointing at the end of an epoch are not per-step costs and fall outside). Augmentation is
off on both sides (the baseline has none). After a warm-up block each, the loops run in alternating
blocks of `--steps` steps for `--rounds` rounds (every round runs each task's pair, the order of a
pair flipping every round), so machine noise falls on both alike; per task `ratio = rooivalk /
baseline` of the median step times, target <= 1.05, and `passed` when every task meets it. The
top-level `rooivalk_step_ms`, `baseline_step_ms`, `ratio` and round medians are the image task's
(as in earlier runs of this script); `tasks` has each task's figures.

Defaults (5 rounds x 20 steps + 1 warm-up block per loop, batch 64 for both tasks): 240 image steps
at ~0.12 s and 240 tensor steps on 2 idle cores, ~1-2 min in all.

    .venv/bin/python benchmarks/trainer_overhead.py
    .venv/bin/python benchmarks/trainer_overhead.py --architecture test_efficientnet --input-size 32 --tasks image
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from rooivalk import machine
from rooivalk.data.simulators.rf import CAPTURE_SAMPLES
from rooivalk.data.transforms import to_model_input
from rooivalk.models import create_model, input_channels, layer_groups, normalization
from rooivalk.plan import AugmentSpec, ModelSpec, OptimizerSpec, StageLR, StageSpec, TrainingSpec
from rooivalk.training.engine.loop import Trainer
from rooivalk.training.engine.optim import WARMUP_START_FACTOR, build_optimizer
from rooivalk.training.engine.stages import resolve_stages
from rooivalk.training.engine.state import epoch_generator
from rooivalk.training.tasks import ImageClassification, Task, TensorClassification, TrainData
from rooivalk.training.tasks.image_input import InputSpec

TARGET = 1.05
NUM_CLASSES = 10
LR = 1e-3
WEIGHT_DECAY = 0.05
LABEL_SMOOTHING = 0.1
CLIP_NORM = 1.0
TASKS = ("image", "tensor")

BlockFn = Callable[[int], list[float]]  # block index -> seconds of each of its steps
BatchFn = Callable[[np.ndarray], torch.Tensor]  # sorted pool rows -> model input


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    parser.add_argument("--rounds", type=int, default=5, help="timed blocks per loop, alternating")
    parser.add_argument("--warmup", type=int, default=1, help="untimed blocks per loop before the first round")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--batch-size", type=int, default=64, help="image task")
    parser.add_argument("--architecture", default="tf_efficientnet_lite0", help="image task (timm)")
    parser.add_argument("--input-size", type=int, default=48, help="image task")
    parser.add_argument("--tensor-batch-size", type=int, default=64, help="tensor task (the plan's RF batch)")
    parser.add_argument("--tensor-architecture", default="small", help="tensor task: an rf_cnn_transformer variant")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--optimizer-kernels",
        choices=("fused", "foreach"),
        default="fused",
        help="rooivalk's AdamW update (training.optimizer.fused); the image baseline keeps torch's default, "
        "foreach, the tensor baseline builds it as rooivalk does",
    )
    args = parser.parse_args(argv)
    args.task_list = [name.strip() for name in args.tasks.split(",") if name.strip()]
    unknown = sorted(set(args.task_list) - set(TASKS))
    if unknown or not args.task_list:
        parser.error(f"--tasks: unknown {unknown}; choose from {', '.join(TASKS)}")
    return args


def make_image_model(args: argparse.Namespace) -> nn.Module:
    torch.manual_seed(args.seed)  # both loops start from the same weights
    model: nn.Module = create_model(ModelSpec(architecture=args.architecture, input_size=args.input_size), NUM_CLASSES)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # in place, like train_model
    return model


def make_tensor_model(args: argparse.Namespace) -> nn.Module:
    torch.manual_seed(args.seed)
    spec = ModelSpec(family="rf_cnn_transformer", architecture=args.tensor_architecture, drop_rate=0.1)
    model: nn.Module = create_model(spec, NUM_CLASSES)
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


def training_spec(args: argparse.Namespace, batch_size: int) -> TrainingSpec:
    return TrainingSpec(
        batch_size=batch_size,
        threads=args.threads,
        augment=AugmentSpec(hflip=0.0),
        grad_clip_norm=CLIP_NORM,
        seed=args.seed,
        max_train_batches=args.steps,
        optimizer=OptimizerSpec(fused=args.optimizer_kernels == "fused"),
    )


def engine_blocks(model: nn.Module, task: Task, spec: TrainingSpec, blocks: int) -> BlockFn:
    """Epochs of a Trainer wired as `fit_model` wires it: one all-groups stage of `blocks` epochs."""
    stage = StageSpec(name="all", epochs=blocks, train=["all"], lr=StageLR(spread=(LR, LR)))
    groups = layer_groups(model)
    clock = StepClock()
    trainer = Trainer(model, groups, resolve_stages([stage], groups), task, spec, progress=clock)
    trainer.enter_stage(0)  # fit() would enter it; the blocks call run_epoch one at a time

    def block(_: int) -> list[float]:
        clock.times = []
        trainer.run_epoch(trainer.stages[0])
        return clock.times

    return block


def bare_blocks(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_of: BatchFn,
    labels: np.ndarray,
    args: argparse.Namespace,
    batch_size: int,
    blocks: int,
) -> BlockFn:
    """The loop a person writes by hand: no stages, no param groups, no checks."""
    criterion = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
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
        order = torch.randperm(len(labels), generator=epoch_generator(args.seed, index))  # the engine's order
        times = []
        for step in range(args.steps):
            began = time.perf_counter()
            batch_index = order[step * batch_size : (step + 1) * batch_size].sort().values.numpy()
            loss = criterion(model(batch_of(batch_index)), torch.as_tensor(labels[batch_index]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
            optimizer.step()
            scheduler.step()
            float(loss.detach())  # the loss as a number, as every loop logs it
            times.append(time.perf_counter() - began)
        return times

    return block


def image_loops(args: argparse.Namespace, blocks: int) -> tuple[BlockFn, BlockFn]:
    rng = np.random.default_rng(args.seed)
    pool = 2 * args.steps * args.batch_size  # each block draws a random half of the pool
    images = rng.integers(0, 256, size=(pool, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, size=pool).astype(np.int64)
    spec = training_spec(args, args.batch_size)
    model = make_image_model(args)
    mean, std = normalization(model)
    chans = input_channels(model)
    task = ImageClassification(
        TrainData((images, labels), (images[:1], labels[:1]), NUM_CLASSES),
        InputSpec(args.input_size, chans, mean, std, channels_last=True),
        spec.augment,
        spec.mix,
    )
    engine = engine_blocks(model, task, spec, blocks)
    bare = make_image_model(args)
    optimizer = torch.optim.AdamW(bare.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)  # torch's default: foreach

    def batch_of(index: np.ndarray) -> torch.Tensor:
        batch: torch.Tensor = to_model_input(images[index], args.input_size, mean, std, chans, channels_last=True)
        return batch

    return engine, bare_blocks(bare, optimizer, batch_of, labels, args, args.batch_size, blocks)


def tensor_loops(args: argparse.Namespace, blocks: int) -> tuple[BlockFn, BlockFn]:
    rng = np.random.default_rng(args.seed + 1)
    pool = 2 * args.steps * args.tensor_batch_size
    inputs = rng.standard_normal((pool, 2, CAPTURE_SAMPLES), dtype=np.float32)  # IQ as iq_to_input scales it
    labels = rng.integers(0, NUM_CLASSES, size=pool).astype(np.int64)
    spec = training_spec(args, args.tensor_batch_size)
    task = TensorClassification({"inputs": inputs}, labels, {"inputs": inputs[:1]}, labels[:1], NUM_CLASSES)
    engine = engine_blocks(make_tensor_model(args), task, spec, blocks)
    bare = make_tensor_model(args)
    optimizer = build_optimizer(spec.optimizer, [{"params": list(bare.parameters()), "lr": LR}])

    def batch_of(index: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(inputs[index]))

    return engine, bare_blocks(bare, optimizer, batch_of, labels, args, args.tensor_batch_size, blocks)


def summarize(times: dict[str, list[float]], rounds: dict[str, list[float]], batch_size: int) -> dict[str, Any]:
    rooivalk_ms = statistics.median(times["rooivalk"]) * 1e3
    baseline_ms = statistics.median(times["baseline"]) * 1e3
    paired = statistics.median(a / b for a, b in zip(rounds["rooivalk"], rounds["baseline"], strict=True))
    return {
        "rooivalk_step_ms": round(rooivalk_ms, 3),
        "baseline_step_ms": round(baseline_ms, 3),
        "ratio": round(rooivalk_ms / baseline_ms, 4),
        # Robust to load that drifts between rounds: each round's pair compared on its own.
        "paired_round_ratio": round(paired, 4),
        "rooivalk_round_medians_ms": [round(v, 3) for v in rounds["rooivalk"]],
        "baseline_round_medians_ms": [round(v, 3) for v in rounds["baseline"]],
        "samples_per_second_rooivalk": round(batch_size / (rooivalk_ms / 1e3), 1),
        "samples_per_second_baseline": round(batch_size / (baseline_ms / 1e3), 1),
        "batch_size": batch_size,
    }


def run_rounds(args: argparse.Namespace, loops: dict[str, dict[str, BlockFn]]) -> dict[str, dict[str, Any]]:
    """Warm-up blocks, then alternating timed rounds; each task's figures."""
    for index in range(args.warmup):
        for pair in loops.values():
            for run in pair.values():
                run(index)
    times: dict[str, dict[str, list[float]]] = {task: {name: [] for name in pair} for task, pair in loops.items()}
    medians: dict[str, dict[str, list[float]]] = {task: {name: [] for name in pair} for task, pair in loops.items()}
    for round_index in range(args.rounds):
        for task, pair in loops.items():
            order = list(pair) if round_index % 2 == 0 else list(reversed(pair))
            for name in order:
                block = pair[name](args.warmup + round_index)
                if len(block) != args.steps:
                    raise RuntimeError(f"{task} {name}: timed {len(block)} steps in a block of {args.steps}")
                times[task][name].extend(block)
                medians[task][name].append(statistics.median(block) * 1e3)
            print(
                f"round {round_index + 1}/{args.rounds} {task}: rooivalk {medians[task]['rooivalk'][-1]:.1f} ms, "
                f"baseline {medians[task]['baseline'][-1]:.1f} ms",
                file=sys.stderr,
                flush=True,
            )
    batch_sizes = {"image": args.batch_size, "tensor": args.tensor_batch_size}
    return {task: summarize(times[task], medians[task], batch_sizes[task]) for task in loops}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    blocks = args.warmup + args.rounds
    builders = {"image": image_loops, "tensor": tensor_loops}
    loops: dict[str, dict[str, BlockFn]] = {}
    for task in args.task_list:
        engine, baseline = builders[task](args, blocks)
        loops[task] = {"rooivalk": engine, "baseline": baseline}
    tasks = run_rounds(args, loops)
    ratios = {task: figures["ratio"] for task, figures in tasks.items()}
    result: dict[str, Any] = {"benchmark": "trainer_overhead"}
    image = tasks.get("image")
    if image is not None:  # the image task's figures at the top level, as earlier runs of this script had them
        image.update(
            model=f"{args.architecture} {args.input_size} px, channels_last", baseline_optimizer_kernels="foreach"
        )
        result.update({key: image[key] for key in ("rooivalk_step_ms", "baseline_step_ms", "ratio")})
    if "tensor" in tasks:
        tasks["tensor"].update(
            model=f"rf_cnn_transformer {args.tensor_architecture}, IQ (2, {CAPTURE_SAMPLES})",
            baseline_optimizer_kernels=args.optimizer_kernels,
        )
    result.update(
        {
            "ratios": ratios,
            "worst_ratio": max(ratios.values()),
            "target": TARGET,
            "passed": all(ratio <= TARGET for ratio in ratios.values()),
        }
    )
    if image is not None:
        result.update(
            {
                "paired_round_ratio": image["paired_round_ratio"],
                "rooivalk_round_medians_ms": image["rooivalk_round_medians_ms"],
                "baseline_round_medians_ms": image["baseline_round_medians_ms"],
                "images_per_second_rooivalk": image["samples_per_second_rooivalk"],
                "images_per_second_baseline": image["samples_per_second_baseline"],
                "architecture": args.architecture,
                "input_size": args.input_size,
                "batch_size": args.batch_size,
            }
        )
    result.update(
        {
            "tasks": tasks,
            "steps": args.steps,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "threads": args.threads,
            "rooivalk_optimizer_kernels": args.optimizer_kernels,
            "augment": False,
            "torch": torch.__version__,
            "machine": machine.describe(),
        }
    )
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure(args)
    for task, figures in result["tasks"].items():
        print(
            f"{task}: rooivalk {figures['rooivalk_step_ms']:.1f} ms/step, baseline {figures['baseline_step_ms']:.1f} "
            f"ms/step, ratio {figures['ratio']:.3f} (paired rounds {figures['paired_round_ratio']:.3f}; "
            f"target <= {TARGET})",
            file=sys.stderr,
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
