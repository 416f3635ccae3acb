"""The example plans at full scale: what pipelines/plans/sign_language.yaml and attribution.yaml reach.

Each plan runs unchanged through the CLI (`python -m rooivalk.cli.app run PLAN --out OUT`, OUT =
runs/example-plans-<time>/<plan>; each plan simulates its data under runs/ on first use), then the
script reads the run's summary.json, its evaluation report (per-class figures; for attribution, each
member alone and the ensemble on the same test split) and its export report (every ONNX variant at
batch 1, the shipped one). `--set KEY=VALUE` passes an override to every plan (`--set PLAN:KEY=VALUE`
to one); overrides are recorded. A plan that fails an evaluation gate stops after evaluate_model: that
is reported, and the plan runs again with evaluation.fail_on_gate=false for the export figures.

Writes example_plans.json and README.md to --out; the JSON printed last has, per plan, the test
accuracy and ratio_to_baseline: attribution's ensemble accuracy over its best single member's, both
measured in the run; sign-language's test accuracy over its test_accuracy gate's minimum.

    .venv/bin/python benchmarks/example_plans.py
    .venv/bin/python benchmarks/example_plans.py --plans attribution --set training.epochs=3 --out /tmp/ex
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rooivalk import machine

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: the benchmarks package importable, as in the other scripts
    sys.path.insert(0, str(ROOT))

PLANS = {"sign_language": "pipelines/plans/sign_language.yaml", "attribution": "pipelines/plans/attribution.yaml"}
NO_GATE = "evaluation.fail_on_gate=false"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", default=",".join(PLANS), help=f"comma-separated: {', '.join(PLANS)}")
    parser.add_argument("--set", action="append", default=[], metavar="[PLAN:]KEY=VALUE", dest="overrides",
                        help="a `rooivalk run --set` for every plan or PLAN only (repeatable; recorded)")  # fmt: skip
    parser.add_argument("--runs", default=None, help="folder of the runs (default runs/example-plans-<time>)")
    parser.add_argument("--out", default=str(ROOT / "docs/results/example_plans"))
    return parser.parse_args(argv)


def overrides_for(plan: str, overrides: list[str]) -> list[str]:
    """The --set values that apply to `plan`: unprefixed ones and those prefixed with `plan:`."""
    split = [item.partition(":") if item.partition(":")[0] in PLANS else ("", "", item) for item in overrides]
    return [rest for prefix, _, rest in split if prefix in ("", plan)]


def read_json(path: str | Path | None) -> dict[str, Any]:
    return json.loads(Path(path).read_text()) if path and Path(path).is_file() else {}


def artifact(step: dict[str, Any], name: str) -> str | None:
    return (step.get("artifacts") or {}).get(name, {}).get("uri")


def data_source(plan: str, overrides: list[str]) -> Path:
    """The plan's data.source as the run sees it (relative to the repository root)."""
    import yaml  # only here: the suite imports every script

    sources = [o.partition("=")[2] for o in overrides if o.startswith("data.source=")]
    return ROOT / (sources[-1] if sources else yaml.safe_load((ROOT / PLANS[plan]).read_text())["data"]["source"])


def run_once(plan: str, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """`rooivalk run` of one plan into `run_dir`; the figures its summary, evaluation and export reports hold."""
    data_existed = data_source(plan, overrides).exists()  # else the run simulates it (inside its wall seconds)
    shown = str(run_dir.relative_to(ROOT)) if run_dir.is_relative_to(ROOT) else str(run_dir)
    command = [sys.executable, "-m", "rooivalk.cli.app", "run", PLANS[plan], "--out", shown]
    command += [arg for item in overrides for arg in ("--set", item)]
    log = run_dir.parent / f"{run_dir.name}.log"
    print(f"{plan} -> {shown} (log {log})", file=sys.stderr, flush=True)
    started = time.perf_counter()
    with log.open("w") as handle:
        returncode = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode
    wall = time.perf_counter() - started
    summary = read_json(run_dir / "summary.json")
    if not summary:
        raise SystemExit(f"{plan}: the run wrote no summary.json (exit {returncode}); see {log}")
    steps = summary["steps"]
    evaluate, train = steps.get("evaluate_model", {}), steps.get("train_model", {})
    report_path = artifact(evaluate, "report")  # a failed gate leaves no artifact: the error names the report
    named = re.search(r"report: (\S+\.json)", str(evaluate.get("error")))
    report = read_json(f"{report_path}/evaluation.json") if report_path else read_json(named and named.group(1))
    export = read_json(artifact(steps.get("export_model", {}), "export_report.json"))
    events, stages = run_dir / "events.jsonl", {s["stage"] for s in train.get("stages") or []}
    ends = [
        e
        for e in map(json.loads, events.read_text().splitlines() if events.exists() else [])
        if e.get("event") == "epoch_end" and e.get("stage") in stages
    ]  # the engine's epochs (XGBoost's: none)
    model = (export.get("models") or {}).get("model", {})
    return {
        "command": shlex.join([".venv/bin/python", *command[1:]]), "overrides": overrides, "returncode": returncode,
        "status": summary["status"], "error": summary.get("error"), "dataset_version": summary.get("dataset_version"),
        "run_seconds": summary.get("seconds"), "process_wall_seconds": wall, "data_existed": data_existed,
        "steps": {name: {"status": s["status"], "seconds": s.get("seconds")} for name, s in steps.items()},
        "sizes": {k: steps["ingest_data"]["metrics"].get(f"{k}_size") for k in ("train", "val", "test")},
        "train": train.get("metrics") or {}, "stages": train.get("stages") or [],
        "epoch_seconds": [e["epoch_seconds"] for e in ends],
        "samples_per_second": [e["samples_per_second"] for e in ends],
        "evaluation": {k: report.get(k) for k in ("split", "accuracy", "macro_f1", "min_class_recall", "worst_class",
                                                   "per_class", "gates", "passed")},
        "ensemble": report.get("ensemble"),
        "gate_failed": report.get("passed") is False or "GateFailure" in str(evaluate.get("error")),
        "export": {"shipped": model.get("shipped"), "variants": model.get("variants"), "gates": export.get("gates"),
                   "torch_fp32_latency_ms": (export.get("metrics") or {}).get("latency_torch_fp32_ms")},
    }  # fmt: skip


def run_plan(plan: str, runs: Path, overrides: list[str]) -> dict[str, Any]:
    attempts = [run_once(plan, runs / plan, overrides)]
    if attempts[0]["gate_failed"] and NO_GATE not in overrides:  # the figures past evaluate_model
        attempts.append(run_once(plan, runs / f"{plan}-no-gate", [*overrides, NO_GATE]))
    first = attempts[0]
    figures: dict[str, Any] = {"test_accuracy": first["evaluation"]["accuracy"]}
    if first["ensemble"]:
        scores = first["ensemble"]["scores"]
        best = max((m for m in scores if m != "ensemble"), key=lambda m: scores[m]["accuracy"])
        figures |= {"ratio_to_baseline": scores["ensemble"]["accuracy"] / scores[best]["accuracy"],
                    "baseline": f"best single member ({best}) on the same test split, same run"}  # fmt: skip
    else:
        gate = next((g for g in first["evaluation"]["gates"] or [] if g["metric"] == "test_accuracy"), None)
        figures |= {"ratio_to_baseline": gate and figures["test_accuracy"] / gate["min"],
                    "baseline": f"the plan's test_accuracy gate minimum ({gate and gate['min']})"}  # fmt: skip
    return {"plan": PLANS[plan], "overrides": overrides, "attempts": attempts, **figures}


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def gates_text(gates: list[dict[str, Any]] | None) -> str:
    return "; ".join(f"{g['metric']} {g['value']:.4f} ({'min ' + str(g['min']) if g['min'] is not None else ''}"
                     f"{'max ' + str(g['max']) if g['max'] is not None else ''}): "
                     f"{'passed' if g['passed'] else '**FAILED**'}" for g in gates or []) or "none"  # fmt: skip


def epoch_text(attempt: dict[str, Any]) -> str:
    seconds, rates = attempt["epoch_seconds"], attempt["samples_per_second"]
    if not rates:
        return "n/a"
    median = statistics.median(rates)
    slow = sum(rate < median / 2 for rate in rates)
    return (f"median {statistics.median(seconds):.2f}, max {max(seconds):.2f}, sum {sum(seconds):.1f}; {slow} of "
            f"{len(rates)} epochs ran at under half the median throughput ({median:.0f} samples/s)")  # fmt: skip


def plan_section(name: str, result: dict[str, Any]) -> list[str]:
    first, last = result["attempts"][0], result["attempts"][-1]
    ev, tr, ex, sizes = first["evaluation"], first["train"], last["export"], first["sizes"]
    worst = (ev["worst_class"] or {}).get("recall")
    ensemble = "xgboost_rounds" in tr
    epochs = ", ".join(f"{s['stage']} {s['epochs']:.0f}" for s in first["stages"])
    epochs = f"{'MLP ' if ensemble else ''}epochs: {epochs} (best epoch {tr.get('best_epoch', 0):.0f})"
    if ensemble:
        best, seconds = tr["xgboost_best_iteration"], tr["xgboost_train_seconds"]
        epochs += (f"; XGBoost {tr['xgboost_rounds']:.0f} rounds, best round {best + 1:.0f} (iteration index "
                   f"{best:.0f}), {seconds:.1f} s")  # fmt: skip
    shipped = (ex["variants"] or {}).get(ex["shipped"] or "", {})
    rerun = " (rerun)" if len(result["attempts"]) > 1 else ""
    rows = [
        ("dataset (train / val / test)",
         " / ".join(f"{sizes[k] or 0:.0f}" for k in sizes) + f" ({first['dataset_version']})"),
        ("train seconds" + (" (MLP)" if ensemble else ""),
         f"{tr.get('train_seconds', 0):.1f} (train_model step {first['steps']['train_model']['seconds']:.1f})"),
        ("epochs / rounds", epochs), ("epoch seconds", epoch_text(first)),
        ("test accuracy", pct(ev["accuracy"])), ("test macro F1", f"{ev['macro_f1']:.4f}"),
        ("lowest class recall", f"{ev['min_class_recall']:.4f} ({worst})"),
        ("evaluation gates", gates_text(ev["gates"])), (f"export gates{rerun}", gates_text(ex["gates"])),
        (f"shipped variant{rerun}", f"{ex['shipped']}: {shipped.get('latency_ms', 0):.3f} ms batch 1 (p95 "
                            f"{shipped.get('latency_p95_ms', 0):.3f}), {shipped.get('size_mb', 0):.3f} MB"),
        ("run status", ", ".join(f"{a['status']} (exit {a['returncode']})" for a in result["attempts"])),
        ("step seconds", ", ".join(f"{k} {v['seconds']:.1f}" for k, v in first["steps"].items() if v["seconds"])),
        ("whole-run wall seconds", ", ".join(f"{a['run_seconds']:.1f} (process {a['process_wall_seconds']:.1f}; data "
                                              f"{'reused' if a['data_existed'] else 'simulated in the run'})"
                                              for a in result["attempts"])),
    ]  # fmt: skip
    lines = [f"## {name}: {result['plan']}", "", *(f"    {a['command']}" for a in result["attempts"]), ""]
    if len(result["attempts"]) > 1:
        lines += ["The unchanged plan failed an evaluation gate (figures above the export rows: that run); the rerun "
                  f"with `{NO_GATE}` trained afresh and gives the export figures.", ""]  # fmt: skip
    lines += ["| figure | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows), ""]
    lines += ["| variant | test accuracy | drop | batch-1 latency ms (p95) | size MB | verdict |",
              "| --- | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for variant, v in (ex["variants"] or {}).items():
        lines.append(f"| {variant} | {pct(v['test_accuracy'])} | {100 * v['accuracy_drop']:.2f} pt | "
                     f"{v['latency_ms']:.3f} ({v['latency_p95_ms']:.3f}) | {v['size_mb']:.3f} "
                     f"| {v['reason']} |")  # fmt: skip
    lines += ["", f"PyTorch eager FP32 at batch 1: {ex['torch_fp32_latency_ms'] or 0:.3f} ms"
              + (" (the MLP alone; each ONNX variant is one graph: the XGBoost trees, the MLP and their weighted "
                 "average)." if ensemble else "."), ""]  # fmt: skip
    if first["ensemble"]:
        scores = first["ensemble"]["scores"]
        lines += ["Each member alone and the ensemble on the same test split (weights "
                  f"{first['ensemble']['weights']}):", "", "| model | weight | test accuracy | log loss | macro F1 "
                  "| lowest class recall |", "| --- | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
        lines += [f"| {m} | {s['weight'] or ''} | {pct(s['accuracy'])} | {s['log_loss']:.4f} | {s['macro_f1']:.4f} "
                  f"| {s['min_class_recall']:.4f} ({s['worst_class']['recall']}) |"
                  for m, s in scores.items()]  # fmt: skip
        lines.append("")
    recall = ", ".join(f"{c} {v['recall']:.3f}" for c, v in sorted((ev["per_class"] or {}).items(),
                                                                    key=lambda kv: kv[1]["recall"]))  # fmt: skip
    lines += [f"Test recall per class, lowest first: {recall}.", "",
              f"Ratio to baseline ({result['baseline']}): **{result['ratio_to_baseline']:.4f}**.", ""]  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    plans = args.plans.split(",")
    if unknown := [p for p in plans if p not in PLANS]:
        raise SystemExit(f"unknown plan(s) {unknown}; choose from {list(PLANS)}")
    load, started = os.getloadavg(), datetime.now(UTC)
    runs = Path(args.runs or ROOT / f"runs/example-plans-{started.strftime('%Y%m%d-%H%M%S')}").resolve()
    runs.mkdir(parents=True, exist_ok=True)
    results = {plan: run_plan(plan, runs, overrides_for(plan, args.overrides)) for plan in plans}
    record = {
        "command": shlex.join([".venv/bin/python", "benchmarks/example_plans.py", *argv]),
        "machine": machine.describe(), "load_average": [round(x, 2) for x in load],
        "date": started.strftime("%Y-%m-%d %H:%M UTC"), "seconds": (datetime.now(UTC) - started).total_seconds(),
        "runs": str(runs), "overrides": args.overrides, "plans": results,
    }  # fmt: skip
    lines = [
        "# The example plans at full scale", "",
        f"Reproduce ({record['seconds'] / 60:.1f} min; {record['date']}; {record['machine']}; load average "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min) at the start):", "",
        f"    {record['command']}", "",
        "Each plan runs unchanged" + (f" but for the overrides {', '.join(f'`{o}`' for o in args.overrides)}"
                                      if args.overrides else "") + " through `rooivalk run` (the commands below), "
        "its data simulated on first use. Evaluation figures: the test split, from the run's evaluation report; "
        "latencies: ONNX Runtime at batch 1 (median, p95), from its export report; train seconds: the training "
        "call (the train_model step's seconds beside it); whole-run wall seconds: summary.json's (the CLI process's "
        "beside it, and whether the run simulated its data). Other work shared the 2 cores: seconds and latencies "
        "are loaded (the epoch seconds row shows how much), accuracies are not. One run per plan, not a mean.", "",
    ]  # fmt: skip
    for plan in plans:
        lines += plan_section(plan, results[plan])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "example_plans.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    (out / "README.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(json.dumps({
        "benchmark": "example_plans", "machine": record["machine"], "overrides": args.overrides,
        "plans": {p: {k: r[k] for k in ("test_accuracy", "ratio_to_baseline", "baseline")}
                  | {"gates_passed": not r["attempts"][0]["gate_failed"], "status": r["attempts"][0]["status"]}
                  for p, r in results.items()},
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
