"""bf16 autocast against fp32 on this CPU: seconds per epoch and accuracy of the counter-drone models.

The counter-drone demo plan's data (pipelines/plans/counter_drone.yaml, simulated into `--out` on
first use, `--count` events) is ingested once. Then the RF, radar and acoustic models each train
twice through the one engine (rooivalk.training.sensor_training.train_sensor), with the plan's training
section at `precision: fp32` and at `precision: bf16` (torch.autocast to bfloat16 for the forward
passes of training and validation; weights, gradients and optimizer state stay fp32), and each
run reports its per-epoch training seconds (the engine's `epoch_seconds`, validation excluded), its
best validation accuracy and its test accuracy. The fusion transformer trains twice the same way on
embeddings cached once from the fp32 sensor models (and the optical model, trained once at the plan's
fp32 within its budget; `--optical-seconds 0` leaves optical out of fusion). Per model: `ratio` =
bf16 / fp32 mean seconds per epoch (below 1: bf16 is faster). Runs are sequential, fp32 first.

    .venv/bin/python benchmarks/sensor_precision.py --report docs/results/sensor_precision/sensor_precision
    .venv/bin/python benchmarks/sensor_precision.py --count 300 --epochs 2 --optical-seconds 0  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rooivalk import machine
from rooivalk.data.ingest_multisensor import ingest_events
from rooivalk.data.multisensor_dataset import MultiSensorDataset, load_multisensor
from rooivalk.evaluation.multisensor_report import sensor_test_accuracy
from rooivalk.features.fusion_features import cache_sensor_features
from rooivalk.models.fusion_inference import FusionFeatures, predict_fusion
from rooivalk.models.sensor_artifacts import SensorTrainResult
from rooivalk.plan import Plan, SensorSpec, TrainingSpec, load_plan
from rooivalk.training.engine.runtime import native_bf16
from rooivalk.training.fusion_training import train_fusion
from rooivalk.training.sensor_training import train_sensor

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")
MODELS = ("rf", "radar", "acoustic", "fusion")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", default=str(ROOT / "pipelines/plans/counter_drone.yaml"))
    parser.add_argument("--count", type=int, help="simulated events (data.simulate.count); default: the plan's")
    parser.add_argument("--epochs", type=int, help="cap every model's (and every stage's) epochs, for a quick run")
    parser.add_argument(
        "--optical-seconds",
        type=float,
        help="the optical model's training budget (it trains once, fp32, for fusion's features); "
        "default: the plan's; 0: fusion without optical",
    )
    parser.add_argument(
        "--models", default=",".join(MODELS), help="compared models; fusion uses the compared sensors (and optical)"
    )
    parser.add_argument("--out", default="runs/sensor-precision", help="simulated source, dataset, feature cache")
    parser.add_argument(
        "--report", help="write REPORT.json and REPORT.md (e.g. docs/results/sensor_precision/sensor_precision)"
    )
    args = parser.parse_args(argv)
    args.model_list = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(args.model_list) - set(MODELS))
    if unknown or not args.model_list:
        parser.error(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    return args


def _absolute(uri: str | None) -> str | None:
    """A relative local path (the plan's pretrained weights) against the repository root."""
    if uri is None or "://" in uri or Path(uri).is_absolute():
        return uri
    return str(ROOT / uri)


def capped(training: TrainingSpec, epochs: int | None) -> TrainingSpec:
    if epochs is None:
        return training
    stages = training.stages and [
        stage.model_copy(update={"epochs": min(stage.epochs, epochs)}) if stage.epochs else stage
        for stage in training.stages
    ]
    return training.model_copy(update={"epochs": min(training.epochs, epochs), "stages": stages})


def load(args: argparse.Namespace) -> Plan:
    overrides = [f"data.source={Path(args.out).resolve()}/source"]
    if args.count is not None:
        overrides.append(f"data.simulate.count={args.count}")
    plan = load_plan(args.plan, overrides)
    sensors, fusion = plan.multisensor_parts()
    sensors = {
        name: sensor.model_copy(
            update={
                "model": sensor.model.model_copy(update={"pretrained": _absolute(sensor.model.pretrained)}),
                "training": capped(sensor.training, args.epochs),
            }
        )
        for name, sensor in sensors.items()
    }
    fusion = fusion.model_copy(update={"training": capped(fusion.training, args.epochs)})
    return plan.model_copy(update={"sensors": sensors, "fusion": fusion})


def with_precision(spec: SensorSpec, precision: str) -> SensorSpec:
    return spec.model_copy(update={"training": spec.training.model_copy(update={"precision": precision})})


def epoch_figures(history: list[dict[str, Any]], train_seconds: float) -> dict[str, Any]:
    """`s_per_epoch`: the mean over epochs after the first, whose one-off costs (the first pass through
    each kernel, oneDNN's primitive caches; paid by whichever precision runs first) it leaves out."""
    seconds = [float(row["epoch_seconds"]) for row in history]
    steady = seconds[1:] or seconds
    return {
        "s_per_epoch": round(statistics.fmean(steady), 4),
        "first_epoch_s": round(seconds[0], 4),
        "mean_s_per_epoch_all": round(statistics.fmean(seconds), 4),
        "epochs": len(seconds),
        "epoch_seconds": [round(s, 3) for s in seconds],
        "train_seconds": round(train_seconds, 2),  # the whole fit: validation, checkpoints, model build
    }


def compare(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    fp32, bf16 = runs["fp32"], runs["bf16"]
    return {
        **runs,
        "ratio": round(bf16["s_per_epoch"] / fp32["s_per_epoch"], 4),
        "val_accuracy_delta": round(bf16["val_accuracy"] - fp32["val_accuracy"], 4),
        "test_accuracy_delta": round(bf16["test_accuracy"] - fp32["test_accuracy"], 4),
    }


def sensor_runs(name: str, spec: SensorSpec, dataset: MultiSensorDataset) -> tuple[dict[str, Any], SensorTrainResult]:
    runs: dict[str, dict[str, Any]] = {}
    kept: SensorTrainResult | None = None
    for precision in PRECISIONS:
        result = train_sensor(name, with_precision(spec, precision), dataset)
        runs[precision] = {
            **epoch_figures(result.history, result.seconds),
            "val_accuracy": round(result.val_accuracy, 4),
            "test_accuracy": round(sensor_test_accuracy(result, dataset), 4),
        }
        print(f"  {name} {precision}: {runs[precision]['s_per_epoch']:.2f} s/epoch, val "
              f"{result.val_accuracy:.4f}, test {runs[precision]['test_accuracy']:.4f}", file=sys.stderr)  # fmt: skip
        if precision == "fp32":
            kept = result  # fusion's features come from the fp32 models
    assert kept is not None
    return compare(runs), kept


def fusion_runs(plan: Plan, features: FusionFeatures, dataset: MultiSensorDataset) -> dict[str, Any]:
    _, spec = plan.multisensor_parts()
    test = dataset.split_mask("test")
    runs: dict[str, dict[str, Any]] = {}
    for precision in PRECISIONS:
        training = spec.training.model_copy(update={"precision": precision})
        model, fit = train_fusion(features, dataset, spec.model_copy(update={"training": training}))
        runs[precision] = {
            **epoch_figures(fit.history, fit.seconds),
            "val_accuracy": round(fit.best_val_accuracy, 4),
            "test_accuracy": round(float((predict_fusion(model, features, test) == dataset.labels[test]).mean()), 4),
        }
        print(f"  fusion {precision}: {runs[precision]['s_per_epoch']:.3f} s/epoch, val {fit.best_val_accuracy:.4f}, "
              f"test {runs[precision]['test_accuracy']:.4f}", file=sys.stderr)  # fmt: skip
    return compare(runs)


def fusion_features(
    dataset: MultiSensorDataset, trained: dict[str, SensorTrainResult], cache_root: str
) -> FusionFeatures:
    """Cached embeddings of the trained sensors in the dataset's sensor order, with their presence columns."""
    names = [name for name in dataset.sensor_names if name in trained]
    features = cache_sensor_features(dataset, {name: trained[name] for name in names}, cache_root)
    columns = [dataset.sensor_names.index(name) for name in names]
    return FusionFeatures(features.features, features.present[:, columns], features.cache)


def fusion_part(
    args: argparse.Namespace, plan: Plan, dataset: MultiSensorDataset, trained: dict[str, SensorTrainResult], out: Path
) -> dict[str, Any]:
    """Fusion over the fp32 sensor models trained here, plus optical trained once (fp32, its budget)."""
    sensors, _ = plan.multisensor_parts()
    trained = dict(trained)
    optical: dict[str, Any] | None = None
    plan_budget = sensors["optical"].training.budget_seconds if "optical" in sensors else None
    budget = plan_budget if args.optical_seconds is None else args.optical_seconds
    if "optical" in sensors and budget:
        spec = sensors["optical"]
        spec = spec.model_copy(update={"training": spec.training.model_copy(update={"budget_seconds": budget})})
        result = train_sensor("optical", spec, dataset)
        trained["optical"] = result
        optical = {"budget_seconds": budget, "val_accuracy": round(result.val_accuracy, 4)}
        print(f"  optical fp32 ({budget:g} s budget): val {result.val_accuracy:.4f}", file=sys.stderr)
    if not trained:
        raise SystemExit("--models: fusion needs at least one sensor model (or optical)")
    features = fusion_features(dataset, trained, str(out / "feature-cache"))
    return {**fusion_runs(plan, features, dataset), "sensors": list(features.features), "optical": optical}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    load_before = os.getloadavg()
    plan = load(args)
    sensors, _ = plan.multisensor_parts()
    out = Path(args.out).resolve()
    print(f"- data: {plan.data.simulate.count if plan.data.simulate else '?'} events into {out}", file=sys.stderr)
    ingest_events(plan, str(out / "dataset"))
    dataset = load_multisensor(str(out / "dataset"))
    models: dict[str, dict[str, Any]] = {}
    trained: dict[str, SensorTrainResult] = {}
    for name in args.model_list:
        if name != "fusion":
            models[name], trained[name] = sensor_runs(name, sensors[name], dataset)
    if "fusion" in args.model_list:
        models["fusion"] = fusion_part(args, plan, dataset, trained, out)
    ratios = {name: figures["ratio"] for name, figures in models.items()}
    return {
        "benchmark": "sensor_precision",
        "ratios": ratios,  # bf16 / fp32 seconds per epoch
        "models": models,
        "events": len(dataset.labels),
        "splits": {split: int(dataset.split_mask(split).sum()) for split in ("train", "val", "test")},
        "epochs_cap": args.epochs,
        "cpu": machine.cpu_model(),
        "machine": machine.describe(),
        "native_bf16": native_bf16(torch.device("cpu")),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "seconds": round(time.perf_counter() - started, 1),
    }


def table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| model | fp32 s/epoch | bf16 s/epoch | bf16/fp32 | val fp32 | val bf16 | test fp32 | test bf16 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, figures in result["models"].items():
        fp32, bf16 = figures["fp32"], figures["bf16"]
        lines.append(
            f"| {name} | {fp32['s_per_epoch']:.2f} | {bf16['s_per_epoch']:.2f} | {figures['ratio']:.2f} "
            f"| {100 * fp32['val_accuracy']:.1f}% | {100 * bf16['val_accuracy']:.1f}% "
            f"| {100 * fp32['test_accuracy']:.1f}% | {100 * bf16['test_accuracy']:.1f}% |"
        )
    return lines


def reading(result: dict[str, Any]) -> list[str]:
    ratios = result["ratios"]
    faster = [name for name, ratio in ratios.items() if ratio < 0.95]
    slower = [name for name, ratio in ratios.items() if ratio > 1.05]
    deltas = [100 * figures["test_accuracy_delta"] for figures in result["models"].values()]
    native = "has" if result["native_bf16"] else "does not have"
    return [
        f"This CPU {native} native bf16 (`native_bf16(torch.device('cpu'))` is {result['native_bf16']}: "
        "oneDNN's AVX512-BF16/AMX kernels).",
        f"bf16 autocast was faster (ratio < 0.95) for: {', '.join(faster) or 'none'}; slower (ratio > 1.05) "
        f"for: {', '.join(slower) or 'none'}; the rest within 5%.",
        f"Test accuracy, bf16 minus fp32: {', '.join(f'{n} {d:+.1f} pt' for n, d in zip(ratios, deltas, strict=True))} "
        f"(one training seed each; one of the {result['splits']['test']} test events is "
        f"{100 / max(result['splits']['test'], 1):.2f} pt).",
    ]


def write_report(result: dict[str, Any], prefix: str, command: str) -> None:
    fusion = result["models"].get("fusion")
    fusion_note = (
        f"Fusion trains on embeddings cached once from the fp32 sensor models ({', '.join(fusion['sensors'])}"
        + (f"; optical trained once, fp32, in {fusion['optical']['budget_seconds']:g} s" if fusion["optical"] else "")
        + ")."
        if fusion
        else ""
    )
    lines = [
        "# bf16 autocast against fp32: the counter-drone models on this CPU",
        "",
        f"Reproduce ({result['seconds'] / 60:.1f} min here; {result['machine']}, torch {result['torch']}, "
        f"{result['threads']} torch threads, no GPU):",
        "",
        f"    {command}",
        "",
        f"The demo plan's data (pipelines/plans/counter_drone.yaml): {result['events']} simulated events, train "
        f"{result['splits']['train']}, val {result['splits']['val']}, test {result['splits']['test']}; every model "
        "trains with its plan's training section, once at `precision: fp32` and once at `precision: bf16`, one "
        f"after the other in one process (load average over 1 min before and after: "
        f"{result['load_average_before_after'][0]}, {result['load_average_before_after'][1]}).",
        "",
        *table(result),
        "",
        "s/epoch: mean training seconds per epoch after the first (validation excluded; the first epoch's one-off "
        "costs fall on whichever precision runs first, and are in the JSON); bf16/fp32 below 1 means bf16 is "
        "faster. val: best validation accuracy of the run; test: the model at that epoch on the test split. "
        + fusion_note,
        "",
        *[f"- {line}" for line in reading(result)],
        "",
    ]
    Path(f"{prefix}.md").write_text("\n".join(lines))
    Path(f"{prefix}.json").write_text(json.dumps(result, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure(args)
    command = shlex.join([".venv/bin/python", "benchmarks/sensor_precision.py", *(argv or sys.argv[1:])])
    result["command"] = command
    print("\n".join(table(result)), file=sys.stderr)
    print("\n".join(reading(result)), file=sys.stderr)
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        write_report(result, args.report, command)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
