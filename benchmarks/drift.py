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
   verdicts against `MonitoringSpec().false_alarm_tolerance`.

    .venv/bin/python benchmarks/drift.py                      # ~15 min on 2 cores (10 of them the soak)
    .venv/bin/python benchmarks/drift.py --soak-seconds 30 --rows 20000 --trials 10 --out /tmp/drift

Writes `<out>.json` and `<out>.md` (default docs/results/drift) and prints one JSON object last.
"""

from __future__ import annotations

import argparse
import http.client
import importlib
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rooivalk.monitoring import metric_names as names
from rooivalk.monitoring.drift import check_drift
from rooivalk.monitoring.profile import ProfileInfo, build_profile, check_frame, save_profile
from rooivalk.plan_monitoring import MonitoringSpec

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
CATEGORIES = np.array(["a", "b", "c", "d"], dtype=object)
BASE_MIX = np.array([0.4, 0.3, 0.2, 0.1])
SOAK_POSTERS = 2
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
    parser.add_argument("--out", default=str(ROOT / "docs/results/drift"), help="writes <out>.json and <out>.md")
    parser.add_argument("--work-dir", default=None, help="default: a temporary folder")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(message, flush=True)


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def write_plan(path: Path, check_interval_s: float) -> Path:
    path.write_text(
        "name: drift-bench\n"
        "data: {source: unused, format: image_folder}\n"
        "model: {architecture: test_efficientnet}\n"
        f"monitoring: {{check_interval_s: {check_interval_s}}}\n"
    )
    return path


# `rooivalk monitor serve` with TCP_NODELAY on the handler's sockets: the --nodelay-probe variant.
NODELAY_SERVE = (
    "import sys; import rooivalk.monitoring.service as service; "
    "service._Handler.disable_nagle_algorithm = True; "
    "from rooivalk.cli.app import app; sys.argv[0] = 'rooivalk'; app()"
)


class Service:
    """`rooivalk monitor serve` in a subprocess, its output in a log file; `nodelay` patches the handler
    to set TCP_NODELAY (what the service does not do as shipped) to show what that changes."""

    def __init__(self, reference: str, plan: Path, log_path: Path, nodelay: bool = False) -> None:
        self.port = free_port()
        entry = [sys.executable, "-c", NODELAY_SERVE] if nodelay else [str(Path(sys.executable).with_name("rooivalk"))]
        command = [*entry, "monitor", "serve"]
        command += ["--reference", reference, "--plan", str(plan), "--host", HOST, "--port", str(self.port)]
        self.log_file = log_path.open("w")
        self.process = subprocess.Popen(command, stdout=self.log_file, stderr=subprocess.STDOUT, cwd=ROOT)
        self.log_path = log_path
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited ({self.process.returncode}): {log_path.read_text()[-2000:]}")
            try:
                status, _ = self.request("GET", "/healthz", timeout=1)
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service did not answer /healthz in 60 s: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)

    def connect(self, timeout: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(HOST, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float = 120) -> tuple[int, bytes]:
        connection = self.connect(timeout)
        try:
            return send(connection, method, path, body)
        finally:
            connection.close()

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log_file.close()


def send(
    connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.read()


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    values = np.asarray(seconds) * 1e3
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
        "max_ms": round(float(values.max()), 3),
    }


def run_threads(worker: Callable[[int], None], threads: int) -> None:
    """Run worker(0..threads-1) on their own threads and wait for all of them."""
    workers = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()


def open_loop(
    service: Service, rps: float, seconds: float, threads: int, path: str, stop: threading.Event | None = None
) -> dict[str, Any]:
    """GET `path` at fixed times t0 + i/rps from `threads` keep-alive connections (request i on
    connection i % threads); latency from the due time, and from the send, of every request."""
    total = int(rps * seconds)
    t0 = time.perf_counter() + 0.2
    due_latency: list[list[float]] = [[] for _ in range(threads)]
    send_latency: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads

    def worker(index: int) -> None:
        connection = service.connect()
        for i in range(index, total, threads):
            if stop is not None and stop.is_set():
                break
            due = t0 + i / rps
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            began = time.perf_counter()
            try:
                status, _ = send(connection, "GET", path)
            except (OSError, http.client.HTTPException):
                status = -1
                connection.close()
                connection = service.connect()
            ended = time.perf_counter()
            if status != 200:
                errors[index] += 1
                continue
            due_latency[index].append(ended - due)
            send_latency[index].append(ended - began)
        connection.close()

    run_threads(worker, threads)
    elapsed = time.perf_counter() - t0
    due_all = [v for part in due_latency for v in part]
    send_all = [v for part in send_latency for v in part]
    return {
        "requests": len(due_all),
        "errors": sum(errors),
        "achieved_rps": round(len(due_all) / elapsed, 2),
        **percentiles(due_all),
        "from_send": percentiles(send_all),
    }


def ingest_closed_loop(service: Service, bodies: list[bytes], seconds: float, threads: int) -> dict[str, Any]:
    """POST pre-encoded batches back to back from `threads` keep-alive connections."""
    accepted = [0] * threads
    refused = [0] * threads
    latencies: list[list[float]] = [[] for _ in range(threads)]
    started = time.perf_counter()
    deadline = started + seconds

    def worker(index: int) -> None:
        connection = service.connect()
        i = index
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            status, _ = send(connection, "POST", "/batches", bodies[i % len(bodies)])
            latencies[index].append(time.perf_counter() - began)
            if status == 202:
                accepted[index] += 1
            else:
                refused[index] += 1
            i += threads
        connection.close()

    run_threads(worker, threads)
    elapsed = time.perf_counter() - started
    rate = sum(accepted) / elapsed
    return {
        "batches": sum(accepted),
        "refused": sum(refused),
        "seconds": round(elapsed, 2),
        "batches_per_s": round(rate, 2),
        "rows_per_s": round(rate * (len(json.loads(bodies[0])["columns"]["num_00"])), 1),
        "post": percentiles([v for part in latencies for v in part]),
    }


def metric_value(text: str, name: str) -> float:
    """The sum of a metric's samples in Prometheus text (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total


def fill_and_check(service: Service, bodies: list[bytes], batches: int) -> dict[str, Any]:
    for i in range(batches):
        status, reply = service.request("POST", "/batches", bodies[i % len(bodies)])
        if status != 202:
            raise RuntimeError(f"POST /batches: {status} {reply[:500]!r}")
    check_s = []
    for _ in range(2):  # the first one imports Evidently
        began = time.perf_counter()
        status, reply = service.request("POST", "/check")
        check_s.append(round(time.perf_counter() - began, 3))
        verdict = json.loads(reply)
        if status != 200 or not verdict.get("checked"):
            raise RuntimeError(f"POST /check: {status} {reply[:500]!r}")
    _, metrics = service.request("GET", "/metrics")
    series = sum(line.startswith(names.FEATURE_DRIFT_SCORE + "{") for line in metrics.decode().splitlines())
    return {
        "check_s": check_s,
        "window_rows": verdict["current_rows"],
        "feature_series": series,
        "metrics_bytes": len(metrics),
    }


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


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    if len(samples) < 2:
        return float("nan")
    t, rss = np.asarray(samples).T
    return float(np.polyfit(t / 60.0, rss, 1)[0])


def run_soak(args: argparse.Namespace, service: Service, bodies: list[bytes]) -> dict[str, Any]:
    """Post batches, scrape /metrics and sample the server's RSS for `--soak-seconds`."""
    stop = threading.Event()
    samples: list[tuple[float, float]] = []
    posted = {"accepted": 0, "refused": 0}
    scrape: dict[str, Any] = {}
    started = time.perf_counter()

    def sampler() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter() - started, service.rss_mb()))
            stop.wait(1.0)

    def poster(index: int) -> None:  # batch i from connection i % SOAK_POSTERS, due at i / rate
        connection = service.connect()
        i = index
        while not stop.wait(max(0.0, started + i / args.soak_batches_per_s - time.perf_counter())):
            status, _ = send(connection, "POST", "/batches", bodies[i % len(bodies)])
            with lock:
                posted["accepted" if status == 202 else "refused"] += 1
            i += SOAK_POSTERS
        connection.close()

    def scraper() -> None:
        scrape.update(open_loop(service, 2.0, args.soak_seconds, 1, "/metrics", stop))

    lock = threading.Lock()
    threads = [threading.Thread(target=fn, daemon=True) for fn in (sampler, scraper)]
    threads += [threading.Thread(target=poster, args=(k,), daemon=True) for k in range(SOAK_POSTERS)]
    try:
        for thread in threads:
            thread.start()
        next_note = 60.0
        while (elapsed := time.perf_counter() - started) < args.soak_seconds:
            time.sleep(min(1.0, args.soak_seconds - elapsed))
            if elapsed >= next_note and samples:
                log(f"  {elapsed:4.0f} s: RSS {samples[-1][1]:.1f} MB, {posted['accepted']} batches")
                next_note += 60.0
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    _, text = service.request("GET", "/metrics")
    return {"samples": samples, "posted": posted, "scrape": scrape, "metrics": text.decode()}


def soak(args: argparse.Namespace, work: Path, reference: str, bodies: list[bytes]) -> dict[str, Any]:
    plan = write_plan(work / "plan-soak.yaml", args.soak_check_interval)
    service = Service(reference, plan, work / "soak.log")
    log(
        f"soak: pid {service.process.pid}, {args.soak_seconds:g} s, {args.soak_batches_per_s:g} batches/s, "
        f"a check every {args.soak_check_interval:g} s"
    )
    try:
        run = run_soak(args, service, bodies)
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
    sys.path.insert(0, str(ROOT))
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
    log(f"false alarms: {sum(alarms)}/{trials} ({rate:.1%}), tolerance {spec.false_alarm_tolerance:.0%}")
    return {
        "trials": trials,
        "reference_rows": 2000,
        "current_rows": 600,
        "alarms": int(sum(alarms)),
        "rate": rate,
        "tolerance": spec.false_alarm_tolerance,
        "passed": rate <= spec.false_alarm_tolerance,
        "mean_drift_share": round(float(np.mean(shares)), 4) if shares else None,
        "max_drift_share": round(float(np.max(shares)), 4) if shares else None,
        "seconds": round(time.perf_counter() - began, 1),
    }


# ------------------------------------------------------------------------------------------- report


def _verdict(passed: bool) -> str:
    return "yes" if passed else "**no**"


def _service_lines(service: dict[str, Any], args: dict[str, Any]) -> list[str]:
    metrics, ingest, setup = service["metrics"], service["ingest"], service["setup"]
    sweep = ", ".join(f"{run['threads']} threads {run['batches_per_s']:.1f}/s" for run in ingest["sweep"])
    return [
        f"- Service ({service['variant']}): `rooivalk monitor serve` as a subprocess (the client in this process, "
        f"keep-alive `http.client` connections), reference profile of {args['service_reference_rows']} rows, "
        f"window {setup['window_rows']} rows, two checks through POST /check before the timed phases "
        f"({setup['check_s'][0]:.2f} s, the first importing Evidently; then {setup['check_s'][1]:.2f} s); no "
        "check ran during them.",
        f"- /metrics ({service['variant']}): open-loop from {args['metrics_threads']} connections, latency from "
        f"each request's due time: p50 {metrics['p50_ms']:.2f}, p99 {metrics['p99_ms']:.2f}, max "
        f"{metrics['max_ms']:.1f} ms at {metrics['achieved_rps']:g} requests/s achieved; from the send p50 "
        f"{metrics['from_send']['p50_ms']:.2f} / p99 {metrics['from_send']['p99_ms']:.2f} ms; {metrics['errors']} "
        f"errors; body {setup['metrics_bytes']} bytes.",
        f"- Ingestion ({service['variant']}), {args['ingest_seconds']:g} s per thread count: {sweep}; the fastest "
        f"({ingest['threads']} threads): {ingest['batches']} batches, {ingest['rows_per_s']:,.0f} rows/s, POST "
        f"latency p50 {ingest['post']['p50_ms']:.1f} / p99 {ingest['post']['p99_ms']:.1f} ms, {ingest['refused']} "
        "refused.",
    ]


def _nodelay_lines(shipped: dict[str, Any], probe: dict[str, Any]) -> list[str]:
    return [
        "## Why every reply of the shipped service waits ~40 ms",
        "",
        "`rooivalk.monitoring.service._Handler` is a `BaseHTTPRequestHandler` with the defaults `wbufsize = 0` "
        "and `disable_nagle_algorithm = False`: a reply goes out as two `send()`s (status line + headers at "
        "`end_headers()`, then the body), so on a keep-alive connection Nagle holds the body until the client "
        "ACKs the headers, and the client delays that ACK (Linux: ~40 ms). Every reply waits ~40 ms whatever "
        f"its work (from the send, /metrics p50 {shipped['metrics']['from_send']['p50_ms']:.1f} ms); at 100 "
        "requests/s over 4 connections (one due every 40 ms each) the queue behind each connection grows for "
        "the whole run.",
        "",
        "The fix is one line in the handler class, `disable_nagle_algorithm = True` (socketserver then sets "
        "TCP_NODELAY on each connection), or writing headers and body in one `send()`. The same measurement on "
        "the service with that attribute patched in (`--nodelay-probe`):",
        "",
        "| variant | /metrics p50 / p99 (ms) | ingestion batches/s (best of the thread counts) |",
        "| --- | ---: | ---: |",
        *(
            f"| {run['variant']} | {run['metrics']['p50_ms']:.2f} / {run['metrics']['p99_ms']:.2f} | "
            f"{run['ingest']['batches_per_s']:.1f} ({run['ingest']['threads']} threads) |"
            for run in (shipped, probe)
        ),
        "",
    ]


def write_report(result: dict[str, Any], out: str) -> None:
    batch, service, fa, args = result["batch"], result["service"], result["false_alarms"], result["args"]
    metrics, ingest = service["metrics"], service["ingest"]
    lines = [
        "# Drift monitoring: batch check, service latency and ingestion, soak, false alarms (issue 6)",
        "",
        f"Reproduce ({result['wall_minutes']:.1f} min here; {result['machine']}):",
        "",
        f"    {result['command']}",
        "",
        "| what | measured | target | met |",
        "| --- | ---: | ---: | --- |",
        f"| batch check, {batch['rows']:,} vs {batch['rows']:,} rows x {batch['columns']} columns: rooivalk "
        f"`check_drift` / Evidently direct (medians of {len(batch['rooivalk_runs_s'])}) | {batch['ratio']:.3f} "
        f"({batch['rooivalk_s']:.2f} s / {batch['evidently_s']:.2f} s) | <= {batch['target']} | "
        f"{_verdict(batch['passed'])} |",
        f"| service as shipped: GET /metrics, {args['metrics_rps']:g}/s open-loop for {args['metrics_seconds']:g} s, "
        f"{service['setup']['feature_series']} per-feature series: p50 / p99 | {metrics['p50_ms']:.2f} / "
        f"{metrics['p99_ms']:.2f} ms | p99 < {metrics['target_p99_ms']:g} ms | {_verdict(metrics['passed'])} |",
        f"| service as shipped: POST /batches of {args['batch_rows']} rows x {batch['columns']} columns, "
        f"{ingest['threads']} client threads | {ingest['batches_per_s']:.1f} batches/s | "
        f">= {ingest['target_batches_per_s']:g} | {_verdict(ingest['passed'])} |",
    ]
    soak_result = result.get("soak")
    if soak_result:
        lines.append(
            f"| soak {soak_result['seconds']:g} s: server RSS slope over the second half | "
            f"{soak_result['slope_second_half_mb_per_min']:+.3f} MB/min | <= "
            f"{soak_result['target_slope_mb_per_min']:g} MB/min | {_verdict(soak_result['bounded'])} |"
        )
    lines += [
        f"| false alarms, {fa['trials']} same-distribution trials ({fa['current_rows']} vs "
        f"{fa['reference_rows']} rows) | {fa['rate']:.1%} ({fa['alarms']}) | <= {fa['tolerance']:.0%} | "
        f"{_verdict(fa['passed'])} |",
        "",
    ]
    probe = result.get("service_nodelay_probe")
    if probe:
        lines += _nodelay_lines(service, probe)
    lines += [
        "## Details",
        "",
        f"- Batch check runs (s): rooivalk {batch['rooivalk_runs_s']}, Evidently {batch['evidently_runs_s']} "
        f"(one untimed warm-up each first; rounds alternate). {batch['numerical']} numerical + "
        f"{batch['categorical']} categorical columns; current: 3 means shifted by 0.3, one scale x1.5, one category "
        f"mix evened: drift share {batch['drift_share']:.2f} ({', '.join(batch['drifted_columns'])}). Not timed: "
        f"`check_frame` on both frames, {batch['check_frame_s']:.2f} s. Both sides pay for Evidently rendering "
        "its plotly widgets inside `Report.run`, which `check_drift` never shows unless asked for HTML.",
        *_service_lines(service, args),
        *(_service_lines(probe, args) if probe else []),
    ]
    if soak_result:
        scrape = soak_result["metrics_scrape_2rps"]
        lines += [
            "- Soak (service as shipped, a plan with `monitoring.check_interval_s: "
            f"{soak_result['check_interval_s']:g}`): "
            f"{soak_result['batches_accepted']} batches accepted ({soak_result['batches_per_s']:.1f}/s of "
            f"{soak_result['batches_per_s_target']:g}/s due, from {SOAK_POSTERS} connections; "
            f"{soak_result['batches_refused']} refused), {soak_result['checks']} scheduled checks (mean "
            f"{soak_result['mean_check_s']} s). Server RSS (VmRSS, every second): start "
            f"{soak_result['rss_start_mb']} MB, after {soak_result['warmup_s']:g} s warm-up "
            f"{soak_result['rss_after_warmup_mb']} MB, peak {soak_result['rss_peak_mb']} MB, end "
            f"{soak_result['rss_end_mb']} MB; second half between {soak_result['rss_second_half_min_mb']} and "
            f"{soak_result['rss_second_half_max_mb']} MB.",
            f"- /metrics scraped at 2/s during the soak (ingestion and checks running): p50 {scrape['p50_ms']:.2f} "
            f"/ p99 {scrape['p99_ms']:.2f} / max {scrape['max_ms']:.1f} ms over {scrape['requests']} requests.",
        ]
    lines += [
        f"- False alarms: tests/unit/monitoring/synthetic.py `make_data` (6 numerical, prediction, confidence), "
        f"reference seed 0, current seeds 100..{99 + fa['trials']}, `MonitoringSpec()` defaults; mean drift share "
        f"{fa['mean_drift_share']}, max {fa['max_drift_share']}.",
        "",
    ]
    Path(f"{out}.md").write_text("\n".join(lines))


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
