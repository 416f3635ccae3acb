"""Quantization-aware training against post-training static INT8, per model of the counter-drone system.

Issue 31 asks, for models whose post-training INT8 misses its gate (docs/results/export: radar and
acoustic), the INT8 accuracy drop after QAT against post-training INT8, and the latency of what
ships. Four exports of the same trained system through the library's export step (every model:
FP32 and static INT8; test split; batch-1 latency), in one run:
  ptq_all       today's static INT8: every op type ONNX Runtime quantizes;
  ptq_weighted  static INT8 of the weighted Conv/MatMul/Gemm nodes only (export.quantization.operators);
  qat_weighted  each model fine-tuned `--epochs` with training.qat (the engine's QAT phase), then
                exported as a plan with training.qat does (operators auto -> weighted);
  qat_all       the QAT models quantized with every op type (more rounding than QAT simulated).
Every drop is against the original FP32 model's test accuracy (the QAT models' own FP32 is reported too).

    make demo && .venv/bin/python benchmarks/qat.py --from-run runs/counter-drone-demo
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: the helpers import from the benchmarks package
    sys.path.insert(0, str(ROOT))

from benchmarks.harness.trained_system import from_run  # noqa: E402
from rooivalk.export._onnx_io import graph_inputs  # noqa: E402
from rooivalk.export.benchmark import measure_latency  # noqa: E402
from rooivalk.export.quantize import QuantizeConfig, quantize_static_int8  # noqa: E402
from rooivalk.export.shipping import REPORT_FILE  # noqa: E402
from rooivalk.export.system import FUSION, export_system  # noqa: E402
from rooivalk.plan import ModelExportSpec, Plan, QATSpec, TrainingSpec, load_plan  # noqa: E402
from rooivalk.training.engine.phases import run_phases  # noqa: E402
from rooivalk.training.engine.state import RunPosition  # noqa: E402
from rooivalk.training.fusion_training import fusion_task  # noqa: E402
from rooivalk.training.sensor_training import sensor_task  # noqa: E402

PRECISIONS = ["fp32", "int8_static"]
CONFIGS = ("ptq_all", "ptq_weighted", "qat_weighted", "qat_all")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default=str(ROOT / "pipelines/plans/counter_drone.yaml"))
    parser.add_argument(
        "--from-run", help="a `rooivalk run` folder of the plan (make demo's); needed unless --time-only"
    )
    parser.add_argument("--epochs", type=int, default=3, help="QAT epochs per model")
    parser.add_argument("--lr", type=float, default=1e-4, help="QAT learning rate")
    parser.add_argument("--models", default="", help="comma-separated subset of the plan's models (default: all)")
    parser.add_argument("--work-dir", default="runs/qat-bench")
    parser.add_argument("--out", default=str(ROOT / "docs/results/compression"), help="where qat.md/.json go")
    parser.add_argument(
        "--time-only",
        action="store_true",
        help="re-time FP32 against INT8 of each config's graphs from an earlier run's --work-dir on a quiet "
        "machine, and rewrite the report with those latencies (the accuracies stay the earlier run's)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="--time-only: alternating timing rounds per pair")
    return parser.parse_args(argv)


def with_export(plan: Plan, operators: str, qat: QATSpec | None) -> Plan:
    """FP32 and static INT8 for every model, gates off (a table, not a release), the given operators; `qat`
    set on every training section (what a plan that trains with training.qat says to its export)."""
    models = {
        name: (plan.export.models.get(name) or ModelExportSpec()).model_copy(update={"precisions": PRECISIONS})
        for name in plan.export_model_names()
    }
    quantization = plan.export.quantization.model_copy(update={"operators": operators})
    export = plan.export.model_copy(
        update={"precisions": PRECISIONS, "models": models, "fail_on_gate": False, "quantization": quantization}
    )
    sensors, fusion = plan.multisensor_parts()
    sensors = {
        name: spec.model_copy(update={"training": spec.training.model_copy(update={"qat": qat})})
        for name, spec in sensors.items()
    }
    fusion = fusion.model_copy(update={"training": fusion.training.model_copy(update={"qat": qat})})
    return plan.model_copy(update={"export": export, "sensors": sensors, "fusion": fusion})


def fine_tune(model: torch.nn.Module, task: Any, training: TrainingSpec, qat: QATSpec, name: str) -> dict[str, Any]:
    """The engine's QAT phase on a copy of a trained model, as a plan with training.qat runs it after the stages."""
    spec = training.model_copy(update={"qat": qat, "checkpoint": training.checkpoint.model_copy(update={"uri": None})})
    started = time.perf_counter()

    def progress(event: dict[str, Any]) -> None:
        if event.get("event") == "epoch_end":
            print(
                f"  {name} qat {event['epoch']}/{event['epochs']}: val {float(event['val_accuracy']):.4f}", flush=True
            )

    with tempfile.TemporaryDirectory(prefix="qat-bench-") as scratch:
        digest = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()
        result = run_phases(
            model, task, spec, RunPosition(), torch.device("cpu"), scratch, digest, progress, lambda *_: None
        )
    model.cpu().eval()
    return {"val_accuracy": result.best_val_accuracy, "seconds": time.perf_counter() - started}


def export(plan: Plan, origin: dict[str, Any], sensors: dict[str, Any], fusion: Any, out: Path) -> dict[str, Any]:
    print(f"- export to {out}", flush=True)
    result = export_system(plan, str(origin["dataset_dir"]), sensors, fusion, str(out), lambda m: None)
    return json.loads(Path(result.files[REPORT_FILE]).read_text())  # type: ignore[no-any-return]


def rows(reports: dict[str, dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """Per model: FP32 accuracy, each config's INT8 drop against the original FP32, latency, what ships."""
    table = []
    for name in names:
        base = reports["ptq_all"]["models"][name]["variants"]["fp32"]
        row: dict[str, Any] = {"model": name, "fp32_accuracy": base["test_accuracy"], "fp32_ms": base["latency_ms"]}
        for config in CONFIGS:
            variants = reports[config]["models"][name]["variants"]
            int8 = variants["int8_static"]
            row[f"{config}_drop"] = (
                None if int8["test_accuracy"] is None else base["test_accuracy"] - int8["test_accuracy"]
            )
            row[f"{config}_ms"] = int8["latency_ms"]
            row[f"{config}_shipped"] = reports[config]["models"][name]["shipped"]
            row[f"{config}_shipped_ms"] = variants[row[f"{config}_shipped"]]["latency_ms"]
        row["qat_fp32_accuracy"] = reports["qat_weighted"]["models"][name]["variants"]["fp32"]["test_accuracy"]
        table.append(row)
    return table


def points(value: float | None) -> str:
    return "failed" if value is None else f"{100 * value:+.2f}"


def markdown(
    table: list[dict[str, Any]], reports: dict[str, Any], args: argparse.Namespace, info: dict[str, Any]
) -> str:
    retimed = info.get("retimed")
    lines = [
        "# Quantization-aware training against post-training static INT8",
        "",
        f"Reproduce (`make demo`, then this script: {info['seconds'] / 60:.1f} min; {info['machine']}, no GPU):",
        "",
        "    make demo",
        f"    .venv/bin/python benchmarks/qat.py --from-run {info['command']['from_run']} --epochs "
        f"{info['command']['epochs']} --lr {info['command']['lr']:g}",
        *([f"    .venv/bin/python benchmarks/qat.py --time-only --rounds {retimed['rounds']}"] if retimed else []),
        "",
        *(
            [
                "Latencies (the ms columns and what ships) were timed again by `--time-only` on a quiet machine: each "
                f"model's FP32 and INT8 graph of each config in {retimed['rounds']} alternating rounds of 100 batch-1 "
                "runs in one process, the INT8 graph rebuilt from the config's FP32 graph with the same operators "
                "(the same nodes in INT8; synthetic calibration, so other scales, which do not change the speed). "
                "The first run shared the 2 cores with other work, so its own timings (the end-to-end figures below) "
                "are loaded.",
                "",
            ]
            if retimed
            else []
        ),
        "The trained counter-drone system of the run, exported four ways by the library's export step (FP32 and "
        "static INT8 of every model; test split; batch 1, median of the plan's timed runs). Drops are in points "
        "against the original FP32 model; QAT: each model fine-tuned by the engine's QAT phase "
        f"({args.epochs} epochs at lr {args.lr:g}), its own FP32 accuracy in the last column. 'ships': what the "
        "export step chose within the model's tolerance.",
        "",
        "| model | FP32 acc | FP32 ms | PTQ all: drop, ms | PTQ weighted: drop, ms | QAT + weighted: drop, ms "
        "| QAT + all: drop, ms | ships (PTQ all / PTQ weighted / QAT weighted) | QAT FP32 acc |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for row in table:
        cells = [f"{points(row[f'{c}_drop'])}, {row[f'{c}_ms']:.3f}" for c in CONFIGS]
        ships = " / ".join(f"{row[f'{c}_shipped']} ({row[f'{c}_shipped_ms']:.2f} ms)" for c in CONFIGS[:3])
        lines.append(
            f"| {row['model']} | {row['fp32_accuracy']:.4f} | {row['fp32_ms']:.3f} | "
            + " | ".join(cells)
            + f" | {ships} | {row['qat_fp32_accuracy']:.4f} |"
        )
    lines += ["", "System test accuracy through ONNX Runtime with what ships (FP32 system in brackets):", ""]
    for config in CONFIGS:
        metrics = reports[config]["metrics"]
        system, fp32 = 100 * metrics["system_test_accuracy"], 100 * metrics["system_fp32_test_accuracy"]
        lines.append(
            f"- {config}: {system:.2f}% ({fp32:.2f}%), end to end p95 {metrics['end_to_end_latency_p95_ms']:.2f} ms"
        )
    lines += [
        "",
        "QAT fine-tuning: "
        + ", ".join(f"{n} {v['seconds']:.0f} s (val {v['val_accuracy']:.4f})" for n, v in info["qat"].items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def synthetic_feeds(path: Path, rows: int) -> dict[str, np.ndarray]:
    """Random rows for every graph input (booleans all True): enough to build and time a graph, whose speed
    does not depend on the calibration values, only on which nodes run in INT8."""
    import onnx

    rng = np.random.default_rng(0)
    feeds = {}
    model = onnx.load(str(path), load_external_data=False)
    for item in graph_inputs(model):
        dims = [
            d.dim_value or 1
            for d in next(v for v in model.graph.input if v.name == item.name).type.tensor_type.shape.dim
        ]
        shape = (rows, *dims[1:])
        feeds[item.name] = np.ones(shape, bool) if item.dtype == np.bool_ else rng.normal(size=shape).astype(item.dtype)
    return feeds


def retime(args: argparse.Namespace, record: dict[str, Any]) -> dict[str, Any]:
    """Batch-1 median latency of each config's FP32 and static INT8 graph of every model, timed in alternating
    rounds in this process. The INT8 graph is rebuilt from the config's FP32 graph with the config's operators
    and synthetic calibration rows: the same nodes in INT8 as the run's graph, other scales."""
    import onnxruntime as ort

    work = Path(args.work_dir).resolve()
    operators = {"ptq_all": "all", "ptq_weighted": "weighted", "qat_weighted": "weighted", "qat_all": "all"}
    timed: dict[str, dict[str, dict[str, float]]] = {}
    for config, ops in operators.items():
        timed[config] = {}
        for name in record["reports"][config]["models"]:
            fp32 = work / config / "variants" / name / "model_fp32.onnx"
            int8 = work / "retime" / config / f"{name}_int8_static.onnx"
            feeds = synthetic_feeds(fp32, 64)
            quantize_static_int8(fp32, int8, feeds, QuantizeConfig(operators=ops))
            sessions = {}
            for precision, path in (("fp32", fp32), ("int8_static", int8)):
                options = ort.SessionOptions()
                options.intra_op_num_threads = torch.get_num_threads()
                sessions[precision] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            sample = {key: value[:1] for key, value in feeds.items()}
            medians: dict[str, list[float]] = {precision: [] for precision in sessions}
            for _ in range(args.rounds):
                for precision, session in sessions.items():
                    stats = measure_latency(lambda x, s=session: s.run(None, x), sample, 100, 10)
                    medians[precision].append(stats.median_ms)
            timed[config][name] = {precision: float(np.median(values)) for precision, values in medians.items()}
            print(f"- {config} {name}: {timed[config][name]}", flush=True)
    return timed


def apply_times(reports: dict[str, Any], timed: dict[str, Any]) -> None:
    """The re-timed medians in place of the export runs' latencies; what ships again the fastest variant
    within the model's accuracy tolerance."""
    for config, models in timed.items():
        for name, latencies in models.items():
            model = reports[config]["models"][name]
            for precision, ms in latencies.items():
                model["variants"][precision]["latency_ms"] = ms
            within = [p for p, v in model["variants"].items() if v["test_accuracy"] is not None and v["passed"]]
            model["shipped"] = min(within, key=lambda p: model["variants"][p]["latency_ms"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.time_only and not args.from_run:
        raise SystemExit("--from-run is needed (a `rooivalk run` folder of the plan), unless --time-only")
    if args.time_only:
        out = Path(args.out)
        record = json.loads((out / "qat.json").read_text())
        timed = retime(args, record)
        apply_times(record["reports"], timed)
        names = [row["model"] for row in record["rows"]]
        table = rows(record["reports"], names)
        record["info"]["retimed"] = {"rounds": args.rounds, "latencies": timed}
        text = markdown(table, record["reports"], args, record["info"])
        (out / "qat.md").write_text(text)
        (out / "qat.json").write_text(json.dumps({**record, "rows": table}, indent=2, default=str) + "\n")
        print(text)
        print(json.dumps(summary_of(table)))
        return 0
    started = time.perf_counter()
    plan = load_plan(args.plan)
    dataset, sensors, features, fusion, origin = from_run(Path(args.from_run))
    names = args.models.split(",") if args.models else [*sensors, FUSION]
    work = Path(args.work_dir).resolve()
    qat = QATSpec(epochs=args.epochs, lr=args.lr)
    reports = {
        "ptq_all": export(with_export(plan, "all", None), origin, sensors, fusion, work / "ptq_all"),
        "ptq_weighted": export(with_export(plan, "weighted", None), origin, sensors, fusion, work / "ptq_weighted"),
    }
    plan_sensors, plan_fusion = plan.multisensor_parts()
    tuned: dict[str, Any] = {}
    qat_sensors = dict(sensors)
    for name, result in sensors.items():
        if name not in names:
            continue
        model = copy.deepcopy(result.model)
        tuned[name] = fine_tune(
            model, sensor_task(name, plan_sensors[name], model, dataset), plan_sensors[name].training, qat, name
        )
        qat_sensors[name] = dataclasses.replace(result, model=model)
    qat_fusion = fusion
    if FUSION in names:
        qat_fusion = copy.deepcopy(fusion)
        tuned[FUSION] = fine_tune(qat_fusion, fusion_task(features, dataset), plan_fusion.training, qat, FUSION)
    reports["qat_weighted"] = export(
        with_export(plan, "auto", qat), origin, qat_sensors, qat_fusion, work / "qat_weighted"
    )
    reports["qat_all"] = export(with_export(plan, "all", qat), origin, qat_sensors, qat_fusion, work / "qat_all")
    table = rows(reports, names)
    info = {
        "seconds": time.perf_counter() - started,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, Python {platform.python_version()}",
        "qat": tuned,
        "source": origin["source"],
        "command": {"from_run": args.from_run, "epochs": args.epochs, "lr": args.lr},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(table, reports, args, info)
    (out / "qat.md").write_text(text)
    (out / "qat.json").write_text(
        json.dumps({"rows": table, "info": info, "reports": reports}, indent=2, default=str) + "\n"
    )
    print(text)
    print(json.dumps(summary_of(table)))
    return 0


def summary_of(table: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"benchmark": "qat", "baseline": "post-training static INT8 (all op types), same run"}
    for row in table:
        name = row["model"]
        summary[f"{name}_ptq_all_drop"] = row["ptq_all_drop"]
        summary[f"{name}_ptq_weighted_drop"] = row["ptq_weighted_drop"]
        summary[f"{name}_qat_drop"] = row["qat_weighted_drop"]
        summary[f"{name}_shipped_ms_ratio_qat_vs_ptq_all"] = row["qat_weighted_shipped_ms"] / row["ptq_all_shipped_ms"]
    return summary


if __name__ == "__main__":
    sys.exit(main())
