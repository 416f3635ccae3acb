"""Drift monitoring against issue 6's speed and memory targets: batch check, service, soak, false alarms.

1. Batch check: `check_drift` on 100,000 reference rows against 100,000 current rows of 20 columns (16
   numerical, 4 categorical; a few columns shifted) against calling Evidently directly on the same
   pandas frames (`Report([DataDriftPreset(...)]).run(...)` then `.dict()`, what `check_drift` parses).
   After one untimed warm-up each, `--repeats` rounds alternate the two (the order flips every round);
   `ratio = rooivalk / evidently` of the medians, target <= 1.2.
2. The service, `rooivalk monitor serve` as a subprocess (its own GIL; the client runs here) on a
   reference profile of `--service-reference-rows` rows saved with `save_profile`, plan-less except
   `check_interval_s` (an hour, so no scheduled check lands in a timed phase; the checks are asked for
   with POST /check): the window is filled and checked first, so /metrics carries per-feature series.
   (a) GET /metrics open-loop at `--metrics-rps` for `--metrics-seconds` from `--metrics-threads`
   keep-alive connections: request i is due at t0 + i/rps and its latency counts from then, so a slow
   reply delays (and is charged to) the requests behind it; target p99 < 50 ms. (b) POST /batches of
   `--batch-rows` rows (pre-encoded JSON) as fast as the `--ingest-threads` connections go for
   `--ingest-seconds`; target >= 50 batches/s.
3. Soak: a fresh service with checks every `--soak-check-interval` s (a plan file) for `--soak-seconds`
   while batches arrive at `--soak-batches-per-s` and /metrics is scraped at 2/s (its latency under
   ingestion and checks is reported too); the server's RSS (/proc/PID/status VmRSS) is sampled every
   second: peak, after warm-up (the first min(60 s, 20%)), and the least-squares slope over the second
   half in MB/min. Bounded: second-half slope <= 1 MB/min.
4. False alarms: `--trials` same-distribution checks (tests/unit/monitoring/synthetic.py's `make_data`:
   reference 2000 rows seed 0, current 600 rows seeds 100, 101, ...); the rate of dataset-drift
   verdicts against `rooivalk.monitoring.drift.FALSE_ALARM_TOLERANCE`.

    .venv/bin/python benchmarks/drift.py                      # ~15 min on 2 cores (10 of them the soak)
    .venv/bin/python benchmarks/drift.py --soak-seconds 30 --rows 20000 --trials 10 --out /tmp/drift

Writes `<out>.json` and `<out>.md` (default docs/results/drift/drift; benchmarks/reports/drift.py) and
prints one JSON object last.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rooivalk.evaluation.profile import ProfileInfo, build_profile, check_frame, save_profile
from rooivalk.monitoring import metric_names as names
from rooivalk.monitoring.drift import FALSE_ALARM_TOLERANCE, check_drift
from rooivalk.plan import MonitoringSpec

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: the helpers import from the benchmarks package
    sys.path.insert(0, str(ROOT))

from benchmarks.analysis.drift import metric_value, slope_mb_per_min  # noqa: E402
from benchmarks.harness.monitor_service import (  # noqa: E402
    Service,
    fill_and_check,
    ingest_closed_loop,
    log,
    open_loop,
    run_soak,
    write_plan,
)
from benchmarks.reports.drift import write_report  # noqa: E402

CATEGORIES = np.array(["a", "b", "c", "d"], dtype=object)
BASE_MIX = np.array([0.4, 0.3, 0.2, 0.1])
TARGETS = {"batch_ratio": 1.2, "metrics_p99_ms": 50.0, "ingest_batches_per_s": 50.0, "soak_slope_mb_per_min": 1.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of reference and of current (batch check)")
    parser.add_argument("--numerical", type=int, default=16)
    parser.add_argument("--categorical", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of the batch check")
    parser.add_argument("--service-reference-rows", type=int, default=5000)
    parser.add_argument("--batch-rows", type=int, default=1000, help="rows per POST /batches")
    parser.add_argument("--metrics-rps", type=float, default=100.0)
    parser.add_argument("--metrics-seconds", type=float, default=20.0)
    parser.add_argument("--metrics-threads", type=int, default=4)
    parser.add_argument("--ingest-seconds", type=float, default=10.0)
    parser.add_argument(
        "--ingest-threads",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[2, 3, 4],
        help="client threads, comma-separated: one timed run each, the fastest is reported",
    )
    parser.add_argument(
        "--nodelay-probe",
        action="store_true",
        help="also run part 2 on the service patched to set TCP_NODELAY (a diagnosis, not the shipped code)",
    )
    parser.add_argument("--soak-seconds", type=float, default=600.0, help="0: no soak")
    parser.add_argument("--soak-batches-per-s", type=float, default=20.0)
    parser.add_argument("--soak-check-interval", type=float, default=5.0)
    parser.add_argument("--trials", type=int, default=100, help="same-distribution trials (false alarms)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "docs/results/drift/drift"), help="writes <out>.json and <out>.md")
    parser.add_argument("--work-dir", default=None, help="default: a temporary folder")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------- data


def make_frame(args: argparse.Namespace, rows: int, seed: int, shifted: bool) -> tuple[pd.DataFrame, ProfileInfo]:
    """`numerical` N(0, 1) columns and `categorical` 4-level columns; `shifted` moves the means of the
    first three numerical columns by 0.3, widens the fourth 1.5x and evens out the first category mix."""
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for i in range(args.numerical):
        mean = 0.3 if shifted and i < 3 else 0.0
        scale = 1.5 if shifted and i == 3 else 1.0
        columns[f"num_{i:02d}"] = rng.normal(mean, scale, rows)
    for i in range(args.categorical):
        mix = np.full(4, 0.25) if shifted and i == 0 else BASE_MIX
        columns[f"cat_{i}"] = rng.choice(CATEGORIES, rows, p=mix)
    return build_profile(columns, {}, dataset_version="ds-bench", model="drift-bench")


def batch_body(frame: pd.DataFrame) -> bytes:
    return json.dumps({"columns": {name: frame[name].tolist() for name in frame.columns}}).encode()


# -------------------------------------------------------------------------------------- batch check


def evidently_direct(reference: pd.DataFrame, current: pd.DataFrame, info: ProfileInfo) -> dict[str, Any]:
    """What a person writes with Evidently alone: the same frames, preset, drift share and parse."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    kinds = info.kinds()
    numerical = [name for name, kind in kinds.items() if kind == "numerical"]
    categorical = [name for name, kind in kinds.items() if kind == "categorical"]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    report = Report([DataDriftPreset(columns=list(kinds), drift_share=0.5)])
    snapshot = report.run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition),
    )
    result: dict[str, Any] = snapshot.dict()
    return result


def batch_check(args: argparse.Namespace) -> dict[str, Any]:
    reference, info = make_frame(args, args.rows, args.seed, shifted=False)
    current, _ = make_frame(args, args.rows, args.seed + 1, shifted=True)
    started = time.perf_counter()
    reference = check_frame(info, reference, "reference")
    current = check_frame(info, current, "current")
    check_frame_s = time.perf_counter() - started
    spec = MonitoringSpec()
    runs = {
        "rooivalk": lambda: check_drift(reference, current, info, spec, embeddings=False),
        "evidently": lambda: evidently_direct(reference, current, info),
    }
    log(f"batch check: {args.rows} vs {args.rows} rows x {len(info.columns)} columns; warm-up")
    verdict = runs["rooivalk"]()
    runs["evidently"]()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(args.repeats):
        order = list(runs) if round_index % 2 == 0 else list(reversed(runs))
        for name in order:
            began = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - began)
            log(f"  round {round_index + 1}: {name} {times[name][-1]:.2f} s")
    rooivalk_s, evidently_s = statistics.median(times["rooivalk"]), statistics.median(times["evidently"])
    ratio = rooivalk_s / evidently_s
    log(f"batch check: rooivalk {rooivalk_s:.2f} s, evidently {evidently_s:.2f} s, ratio {ratio:.3f}")
    return {
        "rows": args.rows,
        "columns": len(info.columns),
        "numerical": args.numerical,
        "categorical": args.categorical,
        "rooivalk_s": round(rooivalk_s, 3),
        "evidently_s": round(evidently_s, 3),
        "ratio": round(ratio, 4),
        "target": TARGETS["batch_ratio"],
        "passed": ratio <= TARGETS["batch_ratio"],
        "rooivalk_runs_s": [round(t, 3) for t in times["rooivalk"]],
        "evidently_runs_s": [round(t, 3) for t in times["evidently"]],
        "check_frame_s": round(check_frame_s, 3),
        "drift_share": verdict.drift_share,
        "drifted_columns": verdict.drifted_columns(),
    }


# ------------------------------------------------------------------------------------------ service


def service_bench(
    args: argparse.Namespace, work: Path, reference: str, bodies: list[bytes], nodelay: bool = False
) -> dict[str, Any]:
    plan = write_plan(work / "plan-service.yaml", 3600.0)
    variant = "nodelay" if nodelay else "shipped"
    service = Service(reference, plan, work / f"service-{variant}.log", nodelay)
    try:
        log(f"service ({variant}): pid {service.process.pid} on port {service.port}; filling the window, checking")
        window = MonitoringSpec().window_rows
        ready = fill_and_check(service, bodies, -(-window // args.batch_rows))
        log(f"  window {ready['window_rows']} rows, checks {ready['check_s']} s, {ready['feature_series']} series")
        log(f"service ({variant}): GET /metrics at {args.metrics_rps:g}/s for {args.metrics_seconds:g} s")
        metrics = open_loop(service, args.metrics_rps, args.metrics_seconds, args.metrics_threads, "/metrics")
        metrics["target_p99_ms"] = TARGETS["metrics_p99_ms"]
        metrics["passed"] = metrics["p99_ms"] < TARGETS["metrics_p99_ms"] and metrics["errors"] == 0
        log(f"  p50 {metrics['p50_ms']:.2f} ms, p99 {metrics['p99_ms']:.2f} ms, {metrics['errors']} errors")
        sweep = []
        for threads in args.ingest_threads:
            log(f"service ({variant}): POST /batches of {args.batch_rows} rows from {threads} threads")
            sweep.append({"threads": threads, **ingest_closed_loop(service, bodies, args.ingest_seconds, threads)})
            log(f"  {sweep[-1]['batches_per_s']:.1f} batches/s ({sweep[-1]['refused']} refused)")
        ingest = dict(max(sweep, key=lambda run: run["batches_per_s"]))
        ingest["target_batches_per_s"] = TARGETS["ingest_batches_per_s"]
        ingest["passed"] = ingest["batches_per_s"] >= TARGETS["ingest_batches_per_s"] and ingest["refused"] == 0
        ingest["sweep"] = [{k: run[k] for k in ("threads", "batches_per_s", "refused", "post")} for run in sweep]
    finally:
        service.stop()
    return {"mode": "subprocess", "variant": variant, "setup": ready, "metrics": metrics, "ingest": ingest}


# --------------------------------------------------------------------------------------------- soak


def soak(args: argparse.Namespace, work: Path, reference: str, bodies: list[bytes]) -> dict[str, Any]:
    plan = write_plan(work / "plan-soak.yaml", args.soak_check_interval)
    service = Service(reference, plan, work / "soak.log")
    log(
        f"soak: pid {service.process.pid}, {args.soak_seconds:g} s, {args.soak_batches_per_s:g} batches/s, "
        f"a check every {args.soak_check_interval:g} s"
    )
    try:
        run = run_soak(service, bodies, args.soak_seconds, args.soak_batches_per_s)
    finally:
        service.stop()
    samples, posted, metrics = run["samples"], run["posted"], run["metrics"]
    checks = metric_value(metrics, names.DRIFT_CHECK_DURATION + "_count")
    check_seconds = metric_value(metrics, names.DRIFT_CHECK_DURATION + "_sum")
    warmup = min(60.0, 0.2 * args.soak_seconds)
    after_warmup = next((rss for t, rss in samples if t >= warmup), samples[-1][1])
    second_half = [(t, rss) for t, rss in samples if t >= args.soak_seconds / 2] or samples[-2:]
    slope = slope_mb_per_min(second_half)
    result = {
        "seconds": args.soak_seconds,
        "batches_per_s_target": args.soak_batches_per_s,
        "batches_accepted": posted["accepted"],
        "batches_refused": posted["refused"],
        "batches_per_s": round(posted["accepted"] / args.soak_seconds, 2),
        "check_interval_s": args.soak_check_interval,
        "checks": int(checks),
        "mean_check_s": round(check_seconds / checks, 3) if checks else None,
        "rss_samples": len(samples),
        "rss_start_mb": round(samples[0][1], 1),
        "rss_after_warmup_mb": round(after_warmup, 1),
        "warmup_s": warmup,
        "rss_peak_mb": round(max(rss for _, rss in samples), 1),
        "rss_end_mb": round(samples[-1][1], 1),
        "rss_second_half_min_mb": round(min(rss for _, rss in second_half), 1),
        "rss_second_half_max_mb": round(max(rss for _, rss in second_half), 1),
        "slope_second_half_mb_per_min": round(slope, 3),
        "target_slope_mb_per_min": TARGETS["soak_slope_mb_per_min"],
        "bounded": abs(slope) <= TARGETS["soak_slope_mb_per_min"],
        "metrics_scrape_2rps": run["scrape"],
        "rss_trace_mb": [round(rss, 1) for _, rss in samples[:: max(1, len(samples) // 120)]],
    }
    log(
        f"soak: RSS peak {result['rss_peak_mb']} MB, after warm-up {result['rss_after_warmup_mb']} MB, "
        f"second-half slope {slope:+.3f} MB/min, {result['checks']} checks"
    )
    return result


# ------------------------------------------------------------------------------------- false alarms


def false_alarms(trials: int) -> dict[str, Any]:
    synthetic = importlib.import_module("tests.unit.monitoring.synthetic")
    spec = MonitoringSpec()
    reference, info = synthetic.make_data(2000, seed=0)
    reference = check_frame(info, reference, "reference")
    alarms, shares = [], []
    began = time.perf_counter()
    for trial in range(trials):
        current, _ = synthetic.make_data(600, seed=100 + trial)
        result = check_drift(reference, check_frame(info, current, "current"), info, spec, embeddings=False)
        alarms.append(result.dataset_drift)
        shares.append(result.drift_share)
    rate = float(np.mean(alarms)) if alarms else float("nan")
    log(f"false alarms: {sum(alarms)}/{trials} ({rate:.1%}), tolerance {FALSE_ALARM_TOLERANCE:.0%}")
    return {
        "trials": trials,
        "reference_rows": 2000,
        "current_rows": 600,
        "alarms": int(sum(alarms)),
        "rate": rate,
        "tolerance": FALSE_ALARM_TOLERANCE,
        "passed": rate <= FALSE_ALARM_TOLERANCE,
        "mean_drift_share": round(float(np.mean(shares)), 4) if shares else None,
        "max_drift_share": round(float(np.max(shares)), 4) if shares else None,
        "seconds": round(time.perf_counter() - began, 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(
        [".venv/bin/python benchmarks/drift.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]
    )
    began = time.perf_counter()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="rooivalk-drift-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)

    batch = batch_check(args)

    reference_frame, info = make_frame(args, args.service_reference_rows, args.seed, shifted=False)
    reference = str(work / "reference")
    save_profile(reference, reference_frame, info)
    bodies = [
        batch_body(make_frame(args, args.batch_rows, args.seed + 10 + i, shifted=i % 2 == 1)[0]) for i in range(10)
    ]
    service = service_bench(args, work, reference, bodies)
    probe = service_bench(args, work, reference, bodies, nodelay=True) if args.nodelay_probe else None
    soak_result = soak(args, work, reference, bodies) if args.soak_seconds > 0 else None
    alarms = false_alarms(args.trials)

    result: dict[str, Any] = {
        "benchmark": "drift",
        "batch": batch,
        "service": service,
        "service_nodelay_probe": probe,
        "soak": soak_result,
        "false_alarms": alarms,
        "passed": {
            "batch_ratio": batch["passed"],
            "metrics_p99": service["metrics"]["passed"],
            "ingest": service["ingest"]["passed"],
            "soak_bounded": None if soak_result is None else soak_result["bounded"],
            "false_alarms": alarms["passed"],
        },
        "command": command,
        "args": vars(args),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, no GPU",
        "cpu_count": os.cpu_count(),
        "evidently": importlib.import_module("evidently").__version__,
        "pandas": pd.__version__,
        "wall_minutes": round((time.perf_counter() - began) / 60, 2),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_report(result, args.out)
    log(f"wrote {args.out}.json and {args.out}.md")
    summary = {
        "benchmark": "drift",
        "batch_rooivalk_s": batch["rooivalk_s"],
        "batch_evidently_s": batch["evidently_s"],
        "batch_ratio": batch["ratio"],
        "metrics_p50_ms": service["metrics"]["p50_ms"],
        "metrics_p99_ms": service["metrics"]["p99_ms"],
        "ingest_batches_per_s": service["ingest"]["batches_per_s"],
        "soak_rss_peak_mb": None if soak_result is None else soak_result["rss_peak_mb"],
        "soak_rss_after_warmup_mb": None if soak_result is None else soak_result["rss_after_warmup_mb"],
        "soak_slope_mb_per_min": None if soak_result is None else soak_result["slope_second_half_mb_per_min"],
        "false_alarm_rate": alarms["rate"],
        "false_alarm_tolerance": alarms["tolerance"],
        "passed": result["passed"],
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
