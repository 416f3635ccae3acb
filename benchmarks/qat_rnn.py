"""QAT for the RNN presets: post-training static INT8 against QAT + static INT8, sign-language plan.

For each preset (default: standard, a GRU, and lightweight, an LSTM) two `rooivalk run`s of
pipelines/plans/sign_language.yaml at a reduced scale (--count sequences, one stage of --epochs epochs,
seed 0, no gates, export precisions fp32 and int8_static with `quantization.operators: weighted`): the
plan as it is (post-training INT8), and the plan with `training.qat: {epochs: --qat-epochs, lr: --lr}`.
Both runs train the same stage (same seed, deterministic CPU kernels), so QAT starts from the weights the
first run exported. With `weighted`, ONNX Runtime quantizes the presets' dense layers only (the GRU/LSTM
cells stay float), which is what QAT rounds for them. Measured per preset from each run's export step:
FP32 and INT8 test accuracy and the INT8 drop against the first run's FP32 model. Writes qat_rnn.md and
qat_rnn.json to --out; the JSON printed last has ratio_to_baseline: the mean INT8 test accuracy after
QAT over the mean post-training INT8 test accuracy (> 1: QAT better).

    .venv/bin/python benchmarks/qat_rnn.py                       # ~10 min on 2 quiet cores
    .venv/bin/python benchmarks/qat_rnn.py --count 300 --epochs 2 --presets lightweight --out /tmp/qat-rnn
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness.results import write_result  # noqa: E402

PLAN = ROOT / "pipelines" / "plans" / "sign_language.yaml"
ROOIVALK = Path(sys.executable).parent / "rooivalk"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1300, help="simulated sequences (the plan's: 2600)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of the one training stage")
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-4, help="QAT learning rate")
    parser.add_argument("--presets", nargs="+", default=["standard", "lightweight"])
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "compression"))
    return parser.parse_args(argv)


def plan(args: argparse.Namespace, preset: str, qat: bool, data: Path) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(PLAN.read_text())
    raw["name"] = f"sign-language-{preset}-{'qat' if qat else 'ptq'}"
    raw["data"]["source"] = str(data)
    raw["data"]["simulate"]["count"] = args.count
    raw["model"]["architecture"] = preset
    raw["training"]["seed"] = 0
    raw["training"]["stages"] = [
        {"name": "main", "epochs": args.epochs, "train": ["all"], "lr": {"head": 1e-3, "backbone": 1e-3}}
    ]
    raw["evaluation"]["gates"] = []
    raw["export"]["precisions"] = ["fp32", "int8_static"]
    raw["export"]["quantization"] = {"operators": "weighted"}
    if qat:
        raw["training"]["qat"] = {"epochs": args.qat_epochs, "lr": args.lr}
    return raw


def run(raw: dict[str, Any], work: Path) -> dict[str, float]:
    """One `rooivalk run` of the plan; its training and export figures."""
    plan_file = work / f"{raw['name']}.yaml"
    plan_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = work / "runs" / raw["name"]
    started = time.perf_counter()
    done = subprocess.run([str(ROOIVALK), "run", str(plan_file), "--out", str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"rooivalk run {plan_file} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    steps = json.loads((out / "summary.json").read_text())["steps"]
    figures = {**steps["train_model"]["metrics"], **steps["export_model"]["metrics"]}
    return {
        "fp32_test_accuracy": figures["model_fp32_test_accuracy"],
        "int8_test_accuracy": figures["model_int8_static_test_accuracy"],
        "stage_best_val_accuracy": figures["stage_main_best_val_accuracy"],
        "qat_best_val_accuracy": figures.get("stage_qat_best_val_accuracy"),  # None without QAT
        "qat_layers": figures.get("qat_layers", 0.0),
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str]) -> None:
    from rooivalk import machine

    args = parse_args(argv)
    presets: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="qat-rnn-") as scratch:
        work = Path(scratch)
        for preset in args.presets:
            ptq = run(plan(args, preset, False, work / "signs.parquet"), work)
            qat = run(plan(args, preset, True, work / "signs.parquet"), work)
            base = ptq["fp32_test_accuracy"]
            presets[preset] = {
                "ptq": ptq,
                "qat": qat,
                "ptq_drop": base - ptq["int8_test_accuracy"],
                "qat_drop": base - qat["int8_test_accuracy"],
            }
    test_size = round(args.count * yaml.safe_load(PLAN.read_text())["data"]["split"]["test"])
    lines = [
        "# QAT for the RNN presets: post-training static INT8 against QAT + static INT8 (sign language)",
        "",
        f"`{PLAN.relative_to(ROOT)}` at {args.count} sequences, one stage of {args.epochs} epochs (seed 0), export "
        "fp32 and int8_static with `quantization.operators: weighted` (ONNX Runtime quantizes the dense layers; "
        f"the GRU/LSTM cells stay float, as QAT leaves them); QAT: {args.qat_epochs} epochs at lr {args.lr} after "
        "the same stage. Drops in points against the post-training run's FP32 model; the test split has "
        f"{test_size} sequences ({100 / test_size:.2f} points each).",
        f"Machine: {machine.describe()}. Command: `{' '.join(['.venv/bin/python benchmarks/qat_rnn.py', *argv])}`.",
        "",
        "| preset | FP32 | PTQ INT8 (drop) | QAT FP32 | QAT INT8 (drop) | QAT layers rounded |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for preset, r in presets.items():
        lines.append(
            f"| {preset} | {r['ptq']['fp32_test_accuracy']:.4f} | {r['ptq']['int8_test_accuracy']:.4f} "
            f"({100 * r['ptq_drop']:+.2f}) | {r['qat']['fp32_test_accuracy']:.4f} | "
            f"{r['qat']['int8_test_accuracy']:.4f} ({100 * r['qat_drop']:+.2f}) | {r['qat']['qat_layers']:.0f} |"
        )
    lines += [
        "",
        "QAT's FP32 accuracy is its own model's after the QAT epochs: part of a negative drop is those extra epochs, "
        "not the rounding.",
    ]
    ptq_mean = sum(r["ptq"]["int8_test_accuracy"] for r in presets.values()) / len(presets)
    qat_mean = sum(r["qat"]["int8_test_accuracy"] for r in presets.values()) / len(presets)
    record = {
        "benchmark": "qat_rnn",
        "machine": machine.describe(),
        "argv": argv,
        "presets": presets,
        "ptq_int8_mean": ptq_mean,
        "qat_int8_mean": qat_mean,
        "ratio_to_baseline": qat_mean / ptq_mean,
    }
    write_result(args.out, "qat_rnn", lines, record)


if __name__ == "__main__":
    main(sys.argv[1:])
