"""Which speed levers help on the device at hand: memory format, bf16 autocast, frozen prefixes.

Times EfficientNet-Lite0 training steps (forward, backward, AdamW step; batch 64) and forward-only
feature extraction (batch 256, what a cached head stage does) with the default layout vs
channels_last and fp32 vs bf16 autocast, plus training with the first k layer groups frozen (no
backward through them) and with their output cached (no forward through them either: the most that
caching a frozen prefix's activations could save). Each configuration: warm-up steps, then the
median of --repeats timed rounds. The baseline, measured in the same run, is fp32 in the default
layout; `ratio` is the best training configuration's speed-up over it.

    .venv/bin/python benchmarks/speed_levers.py               # CPU here
    python3 benchmarks/speed_levers.py --device cuda          # on a GPU node
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext
from typing import Any

import torch

from rooivalk import machine
from rooivalk.models import create_model, layer_groups
from rooivalk.plan import ModelSpec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="48", help="input sizes in px (GPU nodes: 48,224)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _autocast(device: torch.device, bf16: bool) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def time_rounds(step: Any, device: torch.device, steps: int, repeats: int) -> float:
    """Median seconds per call over `repeats` rounds of `steps` calls, after 3 warm-up calls."""
    for _ in range(3):
        step()
    _sync(device)
    rounds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        rounds.append((time.perf_counter() - started) / steps)
    return statistics.median(rounds)


def suffix_forward(model: Any, hidden: torch.Tensor, first_block: int) -> torch.Tensor:
    """EfficientNet-Lite0 from block `first_block` on: what a step computes when the activations
    entering that block are cached (no forward through the frozen prefix at all)."""
    for block in model.blocks[first_block:]:
        hidden = block(hidden)
    return model.forward_head(model.bn2(model.conv_head(hidden)))  # type: ignore[no-any-return]


def measure(
    size: int, channels_last: bool, bf16: bool, frozen: int, args: argparse.Namespace, cached_prefix: bool = False
) -> dict[str, Any]:
    device = torch.device(args.device)
    model = create_model(ModelSpec(architecture="tf_efficientnet_lite0", input_size=size), 10).to(device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)  # type: ignore[call-overload]
    params = dict(model.named_parameters())
    for index, group in enumerate(layer_groups(model)):
        for name in group.param_names:
            params[name].requires_grad_(index >= frozen)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    images = torch.randn(args.batch, 3, size, size, device=device).contiguous(memory_format=layout)
    labels = torch.randint(0, 10, (args.batch,), device=device)
    extract_images = torch.randn(args.eval_batch, 3, size, size, device=device).contiguous(memory_format=layout)

    prefix_output = None
    if cached_prefix:  # groups are stem, blocks.0, ...: the first `frozen` groups end before blocks[frozen - 1]
        with torch.no_grad():
            prefix_output = model.blocks[: frozen - 1](model.bn1(model.conv_stem(images)))

    def train_step() -> None:
        with _autocast(device, bf16):
            logits = model(images) if prefix_output is None else suffix_forward(model, prefix_output, frozen - 1)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def extract_step() -> None:
        with torch.inference_mode(), _autocast(device, bf16):
            model.forward_head(model.forward_features(extract_images), pre_logits=True)

    model.train()
    train = time_rounds(train_step, device, args.steps, args.repeats)
    model.eval()
    extract = time_rounds(extract_step, device, args.steps, args.repeats) if frozen == 0 else None
    return {
        "size": size,
        "channels_last": channels_last,
        "bf16": bf16,
        "frozen_groups": frozen,
        "cached_prefix": cached_prefix,
        "train_images_per_second": args.batch / train,
        "extract_images_per_second": args.eval_batch / extract if extract else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for channels_last in (False, True):
            for bf16 in (False, True):
                rows.append(measure(size, channels_last, bf16, 0, args))
        for frozen in (3, 5):
            rows.append(measure(size, True, False, frozen, args))
            rows.append(measure(size, True, False, frozen, args, cached_prefix=True))
    for row in rows:
        print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}))
    name = torch.cuda.get_device_name() if device.type == "cuda" else machine.describe()
    result: dict[str, Any] = {"benchmark": "speed_levers", "device": name, "threads": torch.get_num_threads()}
    for size in sorted({r["size"] for r in rows}):
        mine = [r for r in rows if r["size"] == size and r["frozen_groups"] == 0]
        base = next(r for r in mine if not r["channels_last"] and not r["bf16"])
        best = max(mine, key=lambda r: r["train_images_per_second"])
        best_extract = max(mine, key=lambda r: r["extract_images_per_second"])
        result[f"{size}px_baseline_train_img_s"] = round(base["train_images_per_second"], 1)
        result[f"{size}px_best_train"] = {"channels_last": best["channels_last"], "bf16": best["bf16"]}
        result[f"{size}px_ratio"] = round(best["train_images_per_second"] / base["train_images_per_second"], 3)
        result[f"{size}px_best_extract"] = {
            "channels_last": best_extract["channels_last"],
            "bf16": best_extract["bf16"],
        }
        result[f"{size}px_extract_ratio"] = round(
            best_extract["extract_images_per_second"] / base["extract_images_per_second"], 3
        )
    result["ratio"] = result[f"{min(r['size'] for r in rows)}px_ratio"]
    result["ratio_of"] = "best training configuration / fp32 default layout, smallest size"
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
