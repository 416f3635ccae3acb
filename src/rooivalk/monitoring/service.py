"""`rooivalk monitor serve`: production batches in, drift verdicts and Prometheus metrics out.

    POST /batches   {"columns": {name: [values...]}} or {"rows": [{name: value}, ...]}
                    -> 202 {"accepted": n, "window_rows": m}; 400 naming the problem (bad JSON, missing
                    or extra columns, wrong types, NaN/inf), 413 over the row or body limit. A refused
                    batch changes nothing.
    POST /check     run a drift check now -> 200 drift verdict (the scheduler does this every
                    monitoring.check_interval_s)
    GET  /metrics   Prometheus text format (names in rooivalk.monitoring.metric_names)
    GET  /healthz   200 {"status": "ok", ...}

The window holds the newest monitoring.window_rows rows and is saved to monitoring.state_uri after
every check and on shutdown. A check that flags drift (`retrain`) sends one retraining event to the
webhook per drift episode: the next event needs a check without drift first, so a drifted window
that stays drifted does not start a retraining run every minute. Stdlib ThreadingHTTPServer: the
load (tens of requests per second, a few MB each) does not need an ASGI stack, and it keeps the
image small. Tabular columns only: embedding drift runs in the batch check (`rooivalk drift`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pandas as pd
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rooivalk import storage
from rooivalk.evaluation.profile import PROFILE_INFO, BadBatch, ProfileInfo, check_frame, load_profile
from rooivalk.monitoring import metric_names as names
from rooivalk.monitoring.drift import DriftResult, check_drift
from rooivalk.monitoring.webhook import post_event
from rooivalk.monitoring.window import SlidingWindow
from rooivalk.plan import MonitoringSpec

log = logging.getLogger(__name__)


class TooLarge(BadBatch):
    """A batch over the row or body limit (HTTP 413)."""


@dataclass
class _Metrics:
    drift_share: Gauge
    drift_detected: Gauge
    drift_threshold: Gauge
    feature_score: Gauge
    feature_drifted: Gauge
    last_check: Gauge
    check_duration: Histogram
    rows: Counter
    rejected: Counter
    window_rows: Gauge
    retrain_events: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> _Metrics:
        label = [names.MODEL]
        return cls(
            drift_share=Gauge(
                names.DRIFT_SHARE, "Share of drifted columns at the last check", label, registry=registry
            ),
            drift_detected=Gauge(names.DRIFT_DETECTED, "1 if the last check flagged drift", label, registry=registry),
            drift_threshold=Gauge(names.DRIFT_THRESHOLD, "Drift-share threshold", label, registry=registry),
            feature_score=Gauge(
                names.FEATURE_DRIFT_SCORE, "Per-column drift score", [names.MODEL, names.FEATURE], registry=registry
            ),
            feature_drifted=Gauge(
                names.FEATURE_DRIFTED, "1 if the column drifted", [names.MODEL, names.FEATURE], registry=registry
            ),
            last_check=Gauge(names.DRIFT_LAST_CHECK_TIMESTAMP, "Unix time of the last check", label, registry=registry),
            check_duration=Histogram(
                names.DRIFT_CHECK_DURATION,
                "Seconds per drift check",
                label,
                buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
                registry=registry,
            ),
            rows=Counter(names.ROWS_INGESTED_TOTAL, "Production rows accepted", label, registry=registry),
            rejected=Counter(
                names.BATCHES_REJECTED_TOTAL, "Batches refused", [names.MODEL, names.REASON], registry=registry
            ),
            window_rows=Gauge(names.WINDOW_ROWS, "Rows in the sliding window", label, registry=registry),
            retrain_events=Counter(
                names.RETRAIN_EVENTS_TOTAL, "Retraining events", [names.MODEL, names.OUTCOME], registry=registry
            ),
        )


def parse_batch(body: bytes) -> pd.DataFrame:
    """A JSON body in either layout as a frame; raises BadBatch on anything else."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadBatch(f"body is not JSON: {error}") from None
    if isinstance(payload, dict) and isinstance(payload.get("columns"), dict):
        columns = payload["columns"]
        lengths = {name: len(values) if isinstance(values, list) else -1 for name, values in columns.items()}
        if any(length < 0 for length in lengths.values()):
            raise BadBatch(f"columns must be lists: {[n for n, k in lengths.items() if k < 0]}")
        if len(set(lengths.values())) > 1:
            raise BadBatch(f"columns have different lengths: {lengths}")
        return pd.DataFrame(columns)
    if isinstance(payload, dict) and isinstance(payload.get("rows"), list):
        if not all(isinstance(row, dict) for row in payload["rows"]):
            raise BadBatch("rows must be objects {column: value}")
        return pd.DataFrame.from_records(payload["rows"])
    raise BadBatch('expected {"columns": {name: [values]}} or {"rows": [{name: value}]}')


class DriftMonitor:
    """The service's state and logic, without HTTP (tests and benchmarks drive it directly too)."""

    def __init__(
        self,
        spec: MonitoringSpec,
        reference: pd.DataFrame,
        info: ProfileInfo,
        model: str,
        reference_uri: str | None = None,
    ) -> None:
        """`reference_uri`: where the reference came from; each check reloads it when the profile there
        changed (the retraining pipeline replaces it when a challenger is promoted)."""
        self.spec, self.info, self.model, self.reference_uri = spec, info, model, reference_uri
        self.reference = check_frame(info, reference, "reference profile")
        self.window = SlidingWindow(spec.window_rows)
        self.registry = CollectorRegistry()
        self.metrics = _Metrics.create(self.registry)
        self.metrics.drift_threshold.labels(model).set(spec.drift_share)
        self.last: DriftResult | None = None
        self.last_check_at: float | None = None
        self._in_episode = False  # a retraining event was sent for the current drift episode
        self._check_lock = threading.Lock()
        self._senders: list[threading.Thread] = []
        if spec.state_uri and self.window.load(spec.state_uri):
            log.info("resumed a window of %d rows from %s", len(self.window), spec.state_uri)
        self.metrics.window_rows.labels(model).set(len(self.window))

    def body_too_large(self, length: int) -> str | None:
        """Why a body of `length` bytes is refused, or None when it is within monitoring.max_body_mb."""
        limit = int(self.spec.max_body_mb * 1e6)
        if length <= limit:
            return None
        return f"body of {length} bytes is over the limit of {limit} (monitoring.max_body_mb)"

    def ingest(self, body: bytes) -> int:
        """Validate and add one batch; raises BadBatch/TooLarge (the window is then unchanged)."""
        try:
            if (too_large := self.body_too_large(len(body))) is not None:
                raise TooLarge(too_large)
            frame = parse_batch(body)
            if len(frame) > self.spec.max_batch_rows:
                raise TooLarge(f"{len(frame)} rows is over the limit of {self.spec.max_batch_rows} (max_batch_rows)")
            if len(frame) == 0:
                raise BadBatch("empty batch")
            batch = check_frame(self.info, frame, "batch")
        except BadBatch as error:
            reason = "too_large" if isinstance(error, TooLarge) else "invalid"
            self.metrics.rejected.labels(self.model, reason).inc()
            raise
        self.window.append(batch)
        self.metrics.rows.labels(self.model).inc(len(batch))
        self.metrics.window_rows.labels(self.model).set(len(self.window))
        return len(batch)

    def reload_reference(self) -> bool:
        """Load the profile at reference_uri again when its data changed (a new champion's profile);
        a profile with other columns also empties the window, whose rows no longer fit it. A profile
        that cannot be read is logged and the current one kept."""
        if not self.reference_uri:
            return False
        try:
            latest = ProfileInfo.model_validate_json(storage.read_bytes(f"{self.reference_uri}/{PROFILE_INFO}"))
            if latest.data_sha256 == self.info.data_sha256:
                return False
            frame, latest = load_profile(self.reference_uri)
            reference = check_frame(latest, frame, "reference profile")
        except (storage.StorageError, ValueError) as error:  # BadBatch and pydantic's errors included
            log.warning("kept the current reference: %s", error)
            return False
        if latest.kinds() != self.info.kinds():
            self.window = SlidingWindow(self.spec.window_rows)
            self.metrics.window_rows.labels(self.model).set(0)
        self.reference, self.info, self._in_episode = reference, latest, False
        log.info("reference reloaded from %s: dataset %s", self.reference_uri, latest.dataset_version)
        return True

    def check(self) -> DriftResult | None:
        """One drift check of the window (None while it holds fewer than min_rows rows), against the
        latest reference."""
        with self._check_lock:
            self.reload_reference()
            current = self.window.frame()
            if len(current) < self.spec.min_rows:
                return None
            started = time.perf_counter()
            result = check_drift(self.reference, current, self.info, self.spec, embeddings=False)
            self.metrics.check_duration.labels(self.model).observe(time.perf_counter() - started)
            self._publish(result)
            if self.spec.state_uri:
                self.window.save(self.spec.state_uri)
            self._signal(result)
            return result

    def _publish(self, result: DriftResult) -> None:
        self.last, self.last_check_at = result, time.time()
        self.metrics.drift_share.labels(self.model).set(result.drift_share)
        self.metrics.drift_detected.labels(self.model).set(float(result.retrain))
        for name, column in result.columns.items():
            self.metrics.feature_score.labels(self.model, name).set(column.score)
            self.metrics.feature_drifted.labels(self.model, name).set(float(column.drifted))
        self.metrics.last_check.labels(self.model).set(self.last_check_at)

    def _signal(self, result: DriftResult) -> None:
        if not result.retrain:
            self._in_episode = False
            return
        if self._in_episode or not self.spec.webhook.url:
            return
        self._in_episode = True
        event = {
            "type": "rooivalk.drift",
            "model": self.model,
            "dataset_version": self.info.dataset_version,
            "drift_share": result.drift_share,
            "drifted_columns": result.drifted_columns(),
            "reason": result.reason,
            "window": {"rows": result.current_rows, "checked_at": datetime.now(UTC).isoformat()},
        }
        sender = threading.Thread(target=self._send, args=(event,), name="retrain-webhook", daemon=True)
        self._senders.append(sender)
        sender.start()  # retries with backoff must not hold up the next check

    def _send(self, event: dict[str, Any]) -> None:
        sent, detail = post_event(self.spec.webhook, event)
        outcome = names.OUTCOME_SENT if sent else names.OUTCOME_FAILED
        self.metrics.retrain_events.labels(self.model, outcome).inc()
        (log.info if sent else log.error)("retraining event for %s: %s", self.model, detail)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model": self.model,
            "window_rows": len(self.window),
            "last_check": self.last_check_at,
            "drift": None if self.last is None else self.last.retrain,
        }

    def close(self) -> None:
        for sender in self._senders:
            sender.join(timeout=self.spec.webhook.timeout_s)
        if self.spec.state_uri:
            self.window.save(self.spec.state_uri)


class _Handler(BaseHTTPRequestHandler):
    monitor: DriftMonitor  # set on the subclass made by make_server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two sends; with Nagle on, a keep-alive client's delayed ACK holds the
    # body ~40 ms (measured: /metrics p99 2.3 s at 100 req/s; 5.7 ms with this; benchmarks/drift.py).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s " + format, self.address_string(), *args)

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._reply(status, json.dumps(payload).encode())

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/metrics":
            self._reply(200, generate_latest(self.monitor.registry), CONTENT_TYPE_LATEST)
        elif self.path == "/healthz":
            self._json(200, self.monitor.health())
        else:
            self._json(404, {"error": f"no such path {self.path}; try /metrics, /healthz, POST /batches"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path == "/check":
            result = self.monitor.check()
            self._json(200, {"checked": False} if result is None else {"checked": True, **result.as_dict()})
            return
        if self.path != "/batches":
            self._json(404, {"error": f"no such path {self.path}; POST /batches or /check"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        too_large = self.monitor.body_too_large(length)
        if too_large is not None:
            # Refused without holding the body: it is read in chunks and dropped (a client still
            # sending would otherwise see a reset instead of the 413 and its message).
            self.monitor.metrics.rejected.labels(self.monitor.model, "too_large").inc()
            remaining = length
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
            self._json(413, {"error": too_large})
            return
        try:
            accepted = self.monitor.ingest(self.rfile.read(length))
        except TooLarge as error:
            self._json(413, {"error": str(error)})
        except BadBatch as error:
            self._json(400, {"error": str(error)})
        else:
            self._json(202, {"accepted": accepted, "window_rows": len(self.monitor.window)})


def make_server(monitor: DriftMonitor, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("MonitorHandler", (_Handler,), {"monitor": monitor})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def run_scheduler(monitor: DriftMonitor, stop: threading.Event) -> None:
    """Check every check_interval_s until `stop`; a failing check is logged, never fatal."""
    while not stop.wait(monitor.spec.check_interval_s):
        try:
            result = monitor.check()
        except Exception:  # the service must outlive one bad check
            log.exception("drift check failed")
            continue
        if result is not None:
            log.info("drift check: %s", result.reason)


def serve(monitor: DriftMonitor, host: str, port: int, ready: threading.Event | None = None) -> None:
    """Serve until interrupted; saves the window on the way out."""
    server = make_server(monitor, host, port)
    stop = threading.Event()
    scheduler = threading.Thread(target=run_scheduler, args=(monitor, stop), name="drift-scheduler", daemon=True)
    scheduler.start()
    if ready is not None:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        stop.set()
        server.server_close()
        monitor.close()
