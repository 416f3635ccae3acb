"""Edge export of every model family: PyTorch eager FP32 against ONNX Runtime FP32 / FP16 / INT8 at batch 1.

The issue's target, on this CPU: the optical CNN in INT8 ONNX Runtime at least 3x faster than FP32
PyTorch eager at batch 1 and at most 0.3x its size, with the accuracy drop reported; the same table
for every family (timm CNN, CNN+Transformer, state-space sequence model, CREPE CNN, fusion transformer).

The trained system comes from `--from-run` (what `make demo` produced) or is trained in this process
(train_multisensor; `--set` shrinks it). The library's own export (rooivalk.export.system) then builds
every precision of every model, scores each on the test split and times it (batch 1, median and p95
over the plan's runs); this script adds the PyTorch eager FP32 baseline of the same module on the
same sample and the weights' size, in the same run. Writes docs/results/export/export.md and .json
and prints one JSON object last.

    make demo && .venv/bin/python benchmarks/export.py --from-run runs/counter-drone-demo
    .venv/bin/python benchmarks/export.py --set data.simulate.count=600 --work-dir /tmp/ex  # in-process
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: the helpers import from the benchmarks package
    sys.path.insert(0, str(ROOT))

from benchmarks.harness.trained_system import from_run, in_process  # noqa: E402  (as benchmarks/counter_drone.py)
from rooivalk.cli.local_run import resolve_plan  # noqa: E402
from rooivalk.export.benchmark import measure_latency, torch_runner  # noqa: E402
from rooivalk.export.sensor_export import ShippedEncoder  # noqa: E402
from rooivalk.export.shipping import REPORT_FILE  # noqa: E402
from rooivalk.export.system import FUSION, ShippedFusion, export_system  # noqa: E402
from rooivalk.models.artifact import state_dict_bytes  # noqa: E402
from rooivalk.plan import ModelExportSpec, Plan, load_plan  # noqa: E402

PRECISIONS = ["fp32", "fp16", "int8_static", "int8_dynamic"]
TARGET_SPEEDUP, TARGET_SIZE = 3.0, 0.3  # the optical-CNN target


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default=str(ROOT / "pipelines/plans/counter_drone.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="plan override a.b=c")
    parser.add_argument("--from-run", help="a `rooivalk run` folder of this plan (make demo's runs/counter-drone-demo)")
    parser.add_argument("--work-dir", default="runs/export-bench", help="training (in-process mode) and export output")
    parser.add_argument("--out", default=str(ROOT / "docs/results/export"), help="where export.md/.json go")
    return parser.parse_args(argv)


def every_precision(plan: Plan) -> Plan:
    """Every model tries every precision (the plan may narrow some), so the table is complete."""
    models = {
        name: (plan.export.models.get(name) or ModelExportSpec()).model_copy(update={"precisions": PRECISIONS})
        for name in plan.export_model_names()
    }
    export = plan.export.model_copy(update={"precisions": PRECISIONS, "models": models, "fail_on_gate": False})
    return plan.model_copy(update={"export": export})


def torch_baselines(plan: Plan, sensors: dict[str, Any], fusion: Any, test_feeds: dict[str, Any]) -> dict[str, Any]:
    """PyTorch eager FP32 batch-1 latency and weight bytes of each shipped module (the ONNX graphs' sources)."""
    spec = plan.export
    out: dict[str, Any] = {}
    for name, result in sensors.items():
        module = ShippedEncoder(result.model.eval(), result.encoding.embed)
        sample = torch.from_numpy(test_feeds[name])
        latency = measure_latency(torch_runner(module), sample, spec.latency_runs, spec.latency_warmup)
        out[name] = {"latency_ms": latency.median_ms, "latency_p95_ms": latency.p95_ms,
                     "weights_mb": len(state_dict_bytes(result.model)) / 1e6}  # fmt: skip
    module = ShippedFusion(fusion.eval())
    inputs = tuple(torch.from_numpy(test_feeds[FUSION][key]) for key in [*fusion.sensors, "present"])

    def run(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with torch.inference_mode():
            return module(*batch)  # type: ignore[no-any-return]

    latency = measure_latency(run, inputs, spec.latency_runs, spec.latency_warmup)
    out[FUSION] = {"latency_ms": latency.median_ms, "latency_p95_ms": latency.p95_ms,
                   "weights_mb": len(state_dict_bytes(fusion)) / 1e6}  # fmt: skip
    return out


def batch_one_feeds(dataset: Any, sensors: dict[str, Any], fusion: Any) -> dict[str, Any]:
    """One test event with every sensor present: each encoder's input and fusion's (FP32 embeddings)."""
    test = dataset.split_mask("test")
    every = test.copy()
    for name in sensors:
        every &= dataset.present_of(name)
    row = np.flatnonzero(every)[:1]
    feeds: dict[str, Any] = {}
    embeddings: dict[str, Any] = {}
    for name, result in sensors.items():
        feeds[name] = result.encoding.preprocess(dataset.arrays[name][row]).astype(np.float32)
        with torch.inference_mode():
            embeddings[name] = result.encoding.embed(result.model.eval(), torch.from_numpy(feeds[name])).numpy()
    feeds[FUSION] = {**embeddings, "present": np.ones((1, len(fusion.sensors)), bool)}
    return feeds


def family_of(plan: Plan, name: str) -> str:
    if name == FUSION:
        return "fusion transformer (embeddings + mask)"
    model = plan.sensors[name].model  # type: ignore[index]
    return f"{model.family} {model.architecture}"


def table(plan: Plan, report: dict[str, Any], baselines: dict[str, Any]) -> list[str]:
    lines = [
        "| model | family | runtime | test accuracy | drop (pt) | top-1 agreement | median ms | p95 ms | size MB "
        "| speedup vs PyTorch | size vs PyTorch | within tolerance | shipped |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, choice in report["models"].items():
        base = baselines[name]
        lines.append(
            f"| {name} | {family_of(plan, name)} | PyTorch eager FP32 | | | | {base['latency_ms']:.3f} "
            f"| {base['latency_p95_ms']:.3f} | {base['weights_mb']:.2f} | 1.0x | 1.00x | | |"
        )
        for precision, score in choice["variants"].items():
            if score["test_accuracy"] is None:
                lines.append(f"| {name} | | ORT {precision} | | | | | | | | | no: {score['reason']} | |")
                continue
            lines.append(
                f"| {name} | | ORT {precision} | {score['test_accuracy']:.4f} | {100 * score['accuracy_drop']:+.2f} "
                f"| {score['top1_agreement']:.4f} | {score['latency_ms']:.3f} | {score['latency_p95_ms']:.3f} "
                f"| {score['size_mb']:.2f} | {base['latency_ms'] / score['latency_ms']:.1f}x "
                f"| {score['size_mb'] / base['weights_mb']:.2f}x | {'yes' if score['passed'] else 'no'} "
                f"| {'**yes**' if precision == choice['shipped'] else ''} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work_dir).resolve()
    plan = every_precision(resolve_plan(load_plan(args.plan, args.overrides), work))
    assert plan.fusion is not None, f"{args.plan} is not a multi-sensor plan"
    started = time.perf_counter()
    if args.from_run:
        dataset, sensors, _features, fusion, origin = from_run(Path(args.from_run))
    else:
        dataset, sensors, _features, fusion, origin = in_process(plan, work)
    dataset_dir = str(origin.get("dataset_dir") or plan.data.source)
    print("- exporting every model in every precision", flush=True)
    exported = export_system(plan, dataset_dir, sensors, fusion, str(work / "export"), lambda m: print(f"- {m}"))
    report = json.loads(Path(exported.files[REPORT_FILE]).read_text())
    baselines = torch_baselines(plan, sensors, fusion, batch_one_feeds(dataset, sensors, fusion))
    optical = report["models"]["optical"]["variants"]["int8_static"]
    speedup = baselines["optical"]["latency_ms"] / optical["latency_ms"]
    size_ratio = optical["size_mb"] / baselines["optical"]["weights_mb"]
    seconds = time.perf_counter() - started
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, Python {platform.python_version()}"
    command = "    .venv/bin/python benchmarks/export.py" + (f" --from-run {args.from_run}" if args.from_run else "")
    command += "".join(f" --set {shlex.quote(o)}" for o in args.overrides)
    metrics = exported.metrics
    lines = [
        "# Edge export: every model family, every precision, batch 1 on this CPU",
        "",
        f"Reproduce ({'`make demo`, then ' if args.from_run else ''}this script: {seconds / 60:.1f} min; {machine}, "
        "no GPU):",
        "",
        *(["    make demo"] if args.from_run else []),
        command,
        "",
        f"Plan `{Path(args.plan).name}` with every precision tried for every model; dataset "
        f"{dataset.info.version_id}, test split scored (sensor models on the test events that have their sample, "
        "fusion on all test events with FP32 embeddings). Latency: batch 1, median and p95 over "
        f"{plan.export.latency_runs} runs after {plan.export.latency_warmup} warm-up runs, ONNX Runtime with as "
        "many threads as PyTorch. Sizes: ONNX files; PyTorch: the state dict. Sensor graphs output the embedding and "
        "the logits. 'within tolerance': accuracy drop within the plan's per-model tolerance; 'shipped': the fastest "
        "of those, what the export step ships.",
        "",
        *table(plan, report, baselines),
        "",
        f"Optical CNN, INT8 static QDQ vs PyTorch eager FP32: **{speedup:.1f}x faster** "
        f"(target >= {TARGET_SPEEDUP:g}x), "
        f"**{size_ratio:.2f}x the size** (target <= {TARGET_SIZE:g}x), accuracy drop "
        f"{100 * optical['accuracy_drop']:+.2f} points.",
        "",
        f"System through ONNX Runtime with the shipped variants: test accuracy "
        f"{100 * metrics['system_test_accuracy']:.2f}% (FP32 {100 * metrics['system_fp32_test_accuracy']:.2f}%); "
        f"end to end (every encoder, then fusion, one event, batch 1): median "
        f"{metrics['end_to_end_latency_ms']:.2f} ms, p95 {metrics['end_to_end_latency_p95_ms']:.2f} ms.",
        "",
        "Latency budgets (p95): "
        + ", ".join(
            f"{g['metric']} {g['value']:.2f} <= {g['max']:g} {'pass' if g['passed'] else 'FAIL'}"
            for g in exported.gates
            if g["metric"].endswith("latency_p95_ms")
        )
        + ".",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "export.md").write_text("\n".join(lines) + "\n")
    record = {"report": report, "torch_baselines": baselines, "seconds": seconds, "machine": machine}
    (out / "export.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print("\n".join(lines))
    print(
        json.dumps(
            {
                "benchmark": "export",
                "baseline": "PyTorch eager FP32, batch 1, same module and sample, same run",
                "optical_int8_speedup_vs_torch": round(speedup, 2),
                "optical_int8_size_ratio": round(size_ratio, 3),
                "optical_int8_accuracy_drop": optical["accuracy_drop"],
                "target_speedup": TARGET_SPEEDUP,
                "target_size_ratio": TARGET_SIZE,
                "target_met": speedup >= TARGET_SPEEDUP and size_ratio <= TARGET_SIZE,
                "shipped": report["shipped"],
                "system_accuracy_drop": metrics["system_accuracy_drop"],
                "end_to_end_latency_p95_ms": metrics["end_to_end_latency_p95_ms"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
