"""The monitor service under test and the HTTP load on it: `rooivalk monitor serve` in a subprocess,
open-loop GETs at fixed due times, closed-loop POSTs, and the soak's posters, scraper and RSS sampler."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.analysis.drift import percentiles
from rooivalk.monitoring import metric_names as names

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
SOAK_POSTERS = 2


def log(message: str) -> None:
    print(message, flush=True)


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


def run_soak(service: Service, bodies: list[bytes], seconds: float, batches_per_s: float) -> dict[str, Any]:
    """Post `batches_per_s` batches a second, scrape /metrics and sample the server's RSS for `seconds`."""
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
        while not stop.wait(max(0.0, started + i / batches_per_s - time.perf_counter())):
            status, _ = send(connection, "POST", "/batches", bodies[i % len(bodies)])
            with lock:
                posted["accepted" if status == 202 else "refused"] += 1
            i += SOAK_POSTERS
        connection.close()

    def scraper() -> None:
        scrape.update(open_loop(service, 2.0, seconds, 1, "/metrics", stop))

    lock = threading.Lock()
    threads = [threading.Thread(target=fn, daemon=True) for fn in (sampler, scraper)]
    threads += [threading.Thread(target=poster, args=(k,), daemon=True) for k in range(SOAK_POSTERS)]
    try:
        for thread in threads:
            thread.start()
        next_note = 60.0
        while (elapsed := time.perf_counter() - started) < seconds:
            time.sleep(min(1.0, seconds - elapsed))
            if elapsed >= next_note and samples:
                log(f"  {elapsed:4.0f} s: RSS {samples[-1][1]:.1f} MB, {posted['accepted']} batches")
                next_note += 60.0
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    _, text = service.request("GET", "/metrics")
    return {"samples": samples, "posted": posted, "scrape": scrape, "metrics": text.decode()}
