"""One fusion training epoch on cached sensor features vs the same epoch recomputing them.

Without the cache, every fusion step runs the four frozen sensor encoders (EfficientNet-Lite0 on the
optical chips, the RF CNN+Transformer, the radar SSM, CREPE on the audio) on its batch; with it, the
encoders ran once per sample (`cache_sensor_features`) and each step only reads embeddings. Both
epochs see the same events in the same order with the same fusion model and optimizer. A second
cache pass over unchanged inputs must do zero encoder forward passes.

    .venv/bin/python benchmarks/feature_cache.py            # 1500 simulated events, ~2 min on 2 cores

Prints one JSON object last: epoch seconds both ways, their ratio (goal: >= 10x), the one-off cost
of building the cache, and the forward passes of the rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rooivalk.cli.local_run import resolve_plan
from rooivalk.data.ingest_multisensor import ingest_multisensor
from rooivalk.data.multisensor_dataset import load_multisensor
from rooivalk.data.simulators.counter_drone import simulate_counter_drone
from rooivalk.features.fusion_features import cache_sensor_features
from rooivalk.models import create_model
from rooivalk.models.fusion_inference import build_fusion, embedding_dims
from rooivalk.models.sensor_artifacts import SensorTrainResult
from rooivalk.models.sensor_encoding import sensor_encoding
from rooivalk.plan import load_plan

ROOT = Path(__file__).resolve().parents[1]


def _epoch(model: torch.nn.Module, batches, make_features, optimizer) -> float:  # type: ignore[no-untyped-def]
    """Seconds of one training epoch; `make_features(rows)` -> ({sensor: (B, D)}, present (B, S))."""
    model.train()
    started = time.perf_counter()
    for rows, labels in batches:
        features, present = make_features(rows)
        loss = torch.nn.functional.cross_entropy(model(features, present), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default=str(ROOT / "pipelines/plans/counter_drone.yaml"))
    parser.add_argument("--events", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--work-dir", default=None, help="default: a temporary folder")
    args = parser.parse_args(argv)

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="rooivalk-cache-bench-")).resolve()
    plan = resolve_plan(load_plan(args.plan), work)
    if plan.sensors is None or plan.fusion is None:
        parser.error(f"{args.plan}: needs 'sensors' and 'fusion' (a multi-sensor plan)")
    simulate_counter_drone(str(work / "events"), args.events, seed=0)
    spec = plan.data.model_copy(update={"source": str(work / "events"), "simulate": None})
    ingest_multisensor(spec, str(work / "dataset"), list(plan.sensors))
    dataset = load_multisensor(str(work / "dataset"))

    torch.manual_seed(0)
    sensors = {}
    for name, sensor in plan.sensors.items():
        model = create_model(sensor.model, dataset.num_classes).eval()
        sensors[name] = SensorTrainResult(name, model, sensor_encoding(model, sensor.model), float("nan"), 0.0)

    started = time.perf_counter()
    cached = cache_sensor_features(dataset, sensors, str(work / "cache"))
    build_seconds = time.perf_counter() - started
    rerun = cache_sensor_features(dataset, sensors, str(work / "cache"))

    train_rows = np.flatnonzero(dataset.split_mask("train"))
    order = np.random.default_rng(0).permutation(train_rows)
    batches = [
        (rows, torch.from_numpy(dataset.labels[rows])) for rows in np.array_split(order, len(order) // args.batch_size)
    ]

    def from_cache(rows: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        features = {name: torch.from_numpy(matrix[rows]) for name, matrix in cached.features.items()}
        return features, torch.from_numpy(dataset.present[rows])

    @torch.no_grad()
    def recompute(rows: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        features = {}
        for name, result in sensors.items():
            inputs = torch.from_numpy(result.encoding.preprocess(dataset.arrays[name][rows]))
            features[name] = result.encoding.embed(result.model, inputs).float()
        return features, torch.from_numpy(dataset.present[rows])

    timings = {}
    for label, make in (("cached", from_cache), ("recompute", recompute)):
        torch.manual_seed(0)
        model = build_fusion(embedding_dims(cached), dataset.num_classes, plan.fusion)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        timings[label] = _epoch(model, batches, make, optimizer)
        print(f"{label}: one fusion epoch over {len(order)} events in {timings[label]:.2f} s", flush=True)

    print(
        json.dumps(
            {
                "events_train": int(len(order)),
                "epoch_seconds_cached": timings["cached"],
                "epoch_seconds_recompute": timings["recompute"],
                "speedup_cached_vs_recompute": timings["recompute"] / timings["cached"],
                "cache_build_seconds": build_seconds,
                "cache_build_forward_passes": cached.forward_passes,
                "rerun_forward_passes": rerun.forward_passes,
                "threads": torch.get_num_threads(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
