"""The optimizer update alone: torch's fused kernel against its foreach default, as rooivalk builds them.

Both optimizers come from `rooivalk.training.engine.optim.build_optimizer` (the plan's AdamW, weight decay
0.05) over every parameter of the same model, with the same fixed gradients; only
`training.optimizer.fused` differs. They run in alternating blocks of `--steps` updates for
`--rounds` rounds after one untimed block each, so machine noise falls on both alike.
`ratio = fused / foreach` of the median update times (target < 1: the plan's default must not be
slower than torch's). The update is a few percent of a training step; benchmarks/trainer_overhead.py
`--optimizer-kernels fused|foreach` measures what it changes in a whole step.

    .venv/bin/python benchmarks/optimizer_step.py
    .venv/bin/python benchmarks/optimizer_step.py --architecture test_efficientnet --steps 5 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Any

import torch

from rooivalk import machine
from rooivalk.export.benchmark import measure_latency
from rooivalk.models import create_model
from rooivalk.plan import ModelSpec, OptimizerSpec
from rooivalk.training.engine.optim import build_optimizer

TARGET = 1.0
NUM_CLASSES = 10
KERNELS = ("fused", "foreach")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", default="tf_efficientnet_lite0")
    parser.add_argument("--optimizer", choices=("adamw", "adam", "sgd"), default="adamw")
    parser.add_argument("--steps", type=int, default=50, help="updates per block")
    parser.add_argument("--rounds", type=int, default=5, help="timed blocks per kernel, alternating")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(ModelSpec(architecture=args.architecture), NUM_CLASSES)
    params = list(model.parameters())
    for param in params:
        param.grad = torch.randn_like(param)
    optimizers = {
        kernels: build_optimizer(
            OptimizerSpec(name=args.optimizer, fused=kernels == "fused"),
            [{"params": params, "lr": 1e-3}],
        )
        for kernels in KERNELS
    }

    def block_ms(kernels: str) -> float:
        """Median milliseconds of one update over a block of `--steps` updates."""
        stats = measure_latency(lambda _: optimizers[kernels].step(), None, runs=args.steps, warmup=0)
        return float(stats.median_ms)  # float(): mypy on benchmarks/ does not find src/rooivalk, so reads it as Any

    for kernels in KERNELS:
        block_ms(kernels)  # warm-up: state allocation, first-call dispatch
    rounds: dict[str, list[float]] = {kernels: [] for kernels in KERNELS}
    for index in range(args.rounds):
        order = KERNELS if index % 2 == 0 else KERNELS[::-1]
        for kernels in order:
            rounds[kernels].append(block_ms(kernels))
    fused_ms, foreach_ms = (statistics.median(rounds[kernels]) for kernels in KERNELS)
    ratio = fused_ms / foreach_ms
    return {
        "benchmark": "optimizer_step",
        "fused_ms": round(fused_ms, 3),
        "foreach_ms": round(foreach_ms, 3),
        "ratio": round(ratio, 4),
        "target": TARGET,
        "passed": ratio < TARGET,
        "fused_round_medians_ms": [round(v, 3) for v in rounds["fused"]],
        "foreach_round_medians_ms": [round(v, 3) for v in rounds["foreach"]],
        "optimizer": args.optimizer,
        "architecture": args.architecture,
        "parameters": sum(p.numel() for p in params),
        "steps": args.steps,
        "rounds": args.rounds,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": machine.describe(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure(args)
    print(
        f"{args.optimizer} update over {result['parameters']:,} parameters: fused {result['fused_ms']:.2f} ms, "
        f"foreach {result['foreach_ms']:.2f} ms, ratio {result['ratio']:.3f}",
        file=sys.stderr,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
