"""The monitor service over real HTTP on loopback (in-process server thread): bad batches get a 4xx
naming the problem and leave the window unchanged; the window survives a restart; drift sends one
retraining event per episode, retried through a failing webhook."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from rooivalk.evaluation.profile import load_profile, save_profile
from rooivalk.monitoring.service import DriftMonitor, make_server
from rooivalk.plan import MonitoringSpec, WebhookSpec
from tests.unit.monitoring.receiver import Receiver
from tests.unit.monitoring.synthetic import NUMERIC, make_data, save_reference


def _spec(tmp_path: Path, webhook: str | None = None) -> MonitoringSpec:
    return MonitoringSpec(
        window_rows=1000,
        min_rows=200,
        check_interval_s=3600,  # checks run on POST /check here
        max_batch_rows=600,
        max_body_mb=0.5,
        state_uri=str(tmp_path / "state"),
        webhook=WebhookSpec(url=webhook, backoff_s=0.05, max_attempts=4, timeout_s=2),
    )


class Client:
    def __init__(self, monitor: DriftMonitor) -> None:
        self.monitor = monitor
        self.server = make_server(monitor, "127.0.0.1", 0)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        connection.close()
        is_json = response.getheader("Content-Type", "").startswith("application/json")
        return response.status, json.loads(data) if is_json else data.decode()

    def post(self, frame: pd.DataFrame) -> tuple[int, Any]:
        return self.request("POST", "/batches", json.dumps({"columns": frame.to_dict(orient="list")}).encode())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _monitor(tmp_path: Path, spec: MonitoringSpec) -> DriftMonitor:
    frame, info = load_profile(save_reference(tmp_path / "reference"))
    return DriftMonitor(spec, frame, info, "counter-drone")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    served = Client(_monitor(tmp_path, _spec(tmp_path)))
    yield served
    served.close()


def _batch(rows: int = 300, seed: int = 1, **shift: Any) -> pd.DataFrame:
    return make_data(rows, seed=seed, **shift)[0]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "body is not JSON"),
        (b'{"something": 1}', 400, 'expected {"columns"'),
        ("drop", 400, "missing column(s) ['x2']"),
        ("extra", 400, "unexpected column(s) ['speed']"),
        ("text", 400, "column 'x1' must be numbers"),
        ("nan", 400, "'x3' has NaN or infinite"),
        ("inf", 400, "'x4' has NaN or infinite"),
        ("rows", 413, "700 rows is over the limit of 600"),
        ("bytes", 413, "over the limit of 500000"),
    ],
)
def test_a_bad_batch_gets_a_4xx_naming_the_problem_and_the_window_is_unchanged(
    client: Client, body: Any, status: int, message: str
) -> None:
    assert client.post(_batch())[0] == 202
    frame = _batch(seed=2)
    columns = frame.to_dict(orient="list")
    if body == "drop":
        del columns["x2"]
    elif body == "extra":
        columns["speed"] = [1.0] * len(frame)
    elif body == "text":
        columns["x1"] = ["fast"] * len(frame)
    elif body == "nan":
        columns["x3"][7] = float("nan")  # json.dumps writes NaN, json.loads reads it
    elif body == "inf":
        columns["x4"][0] = float("inf")
    elif body == "rows":
        columns = _batch(700).to_dict(orient="list")
    elif body == "bytes":
        columns["x0"] = [0.123456789] * 60_000
    if isinstance(body, str):
        body = json.dumps({"columns": columns}).encode()
    got, answer = client.request("POST", "/batches", body)
    assert got == status
    assert message in answer["error"]
    assert len(client.monitor.window) == 300  # unchanged
    health = client.request("GET", "/healthz")
    assert health[0] == 200
    assert health[1]["window_rows"] == 300
    metrics = client.request("GET", "/metrics")[1]
    reason = "too_large" if status == 413 else "invalid"
    assert f'rooivalk_batches_rejected_total{{model="counter-drone",reason="{reason}"}} 1.0' in metrics


def test_rows_layout_and_metrics_after_a_check(client: Client) -> None:
    rows = _batch(250).to_dict(orient="records")
    assert client.request("POST", "/batches", json.dumps({"rows": rows}).encode()) == (
        202,
        {"accepted": 250, "window_rows": 250},
    )
    status, verdict = client.request("POST", "/check")
    assert status == 200
    assert verdict["checked"]
    assert not verdict["retrain"]
    metrics = client.request("GET", "/metrics")[1]
    assert 'rooivalk_rows_ingested_total{model="counter-drone"} 250.0' in metrics
    assert 'rooivalk_drift_detected{model="counter-drone"} 0.0' in metrics
    assert 'rooivalk_feature_drift_score{feature="x0",model="counter-drone"}' in metrics
    assert 'rooivalk_drift_check_duration_seconds_count{model="counter-drone"} 1.0' in metrics
    assert client.request("GET", "/nowhere")[0] == 404


def test_the_window_keeps_the_newest_rows_and_survives_a_restart(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    first = Client(_monitor(tmp_path, spec))
    for seed in range(4):  # 4 x 300 rows into a 1000-row window
        assert first.post(_batch(seed=seed))[0] == 202
    kept = first.monitor.window.frame()
    assert len(kept) == 1000
    pd.testing.assert_frame_equal(kept.tail(300).reset_index(drop=True), _batch(seed=3).reset_index(drop=True))
    first.close()
    first.monitor.close()  # what SIGTERM does: the window goes to state_uri

    restarted = _monitor(tmp_path, spec)
    pd.testing.assert_frame_equal(restarted.window.frame(), kept)


def test_drift_sends_one_retraining_event_per_episode_through_a_failing_webhook(tmp_path: Path) -> None:
    receiver = Receiver(failures=2)  # the first two tries get HTTP 500
    monitor = _monitor(tmp_path, _spec(tmp_path, receiver.url))
    try:
        shifted = dict.fromkeys(NUMERIC, 0.8)
        for seed in range(4):
            monitor.window.append(_batch(seed=seed, mean_shift=shifted))
        for _ in range(3):  # still drifted: no second event
            result = monitor.check()
            assert result is not None
            assert result.retrain
        monitor.close()  # waits for the sender
        assert receiver.attempts == 3
        assert len(receiver.events) == 1
        event = receiver.events[0]
        assert event["model"] == "counter-drone"
        assert event["dataset_version"] == "ds-test"
        assert event["drift_share"] >= 0.5
        assert set(event["drifted_columns"]) >= set(NUMERIC)
        assert event["window"]["rows"] == 1000

        for seed in range(4):  # back to normal, then drift again: a new episode, a new event
            monitor.window.append(_batch(seed=10 + seed))
        assert not monitor.check().retrain  # type: ignore[union-attr]
        for seed in range(4):
            monitor.window.append(_batch(seed=20 + seed, mean_shift=shifted))
        assert monitor.check().retrain  # type: ignore[union-attr]
        monitor.close()
        assert len(receiver.events) == 2
        metrics = monitor.registry.get_sample_value(
            "rooivalk_retrain_events_total", {"model": "counter-drone", "outcome": "sent"}
        )
        assert metrics == 2.0
    finally:
        receiver.close()


def test_an_unreachable_webhook_is_counted_as_failed_and_the_service_goes_on(tmp_path: Path) -> None:
    receiver = Receiver(failures=100)
    monitor = _monitor(tmp_path, _spec(tmp_path, receiver.url))
    try:
        for seed in range(4):
            monitor.window.append(_batch(seed=seed, mean_shift=dict.fromkeys(NUMERIC, 0.8)))
        started = time.monotonic()
        assert monitor.check().retrain  # type: ignore[union-attr]
        assert time.monotonic() - started < 5  # the check does not wait for the retries
        monitor.close()
        assert receiver.attempts == 4
        failed = monitor.registry.get_sample_value(
            "rooivalk_retrain_events_total", {"model": "counter-drone", "outcome": "failed"}
        )
        assert failed == 1.0
    finally:
        receiver.close()


def test_a_refreshed_reference_is_picked_up_by_the_next_check(tmp_path: Path) -> None:
    """The retraining pipeline replaces the reference when a challenger is promoted: data that drifted
    from the old champion's profile is in-distribution for the new one, and the monitor follows."""
    reference_uri = save_reference(tmp_path / "reference")
    frame, info = load_profile(reference_uri)
    monitor = DriftMonitor(_spec(tmp_path), frame, info, "counter-drone", reference_uri=reference_uri)
    shifted = dict.fromkeys(NUMERIC, 0.8)
    for seed in range(4):
        monitor.window.append(_batch(seed=seed, mean_shift=shifted))
    assert monitor.check().retrain  # type: ignore[union-attr]

    (tmp_path / "reference" / "profile.json").write_text("{not json")  # a half-written refresh
    assert monitor.check().retrain  # type: ignore[union-attr]  # the current reference is kept

    new_frame, new_info = make_data(2000, seed=5, mean_shift=shifted)
    save_profile(reference_uri, new_frame, new_info.model_copy(update={"dataset_version": "ds-new"}))
    result = monitor.check()
    assert result is not None
    assert not result.retrain
    assert monitor.info.dataset_version == "ds-new"
    assert len(monitor.window) == 1000  # same columns: the window is kept
