"""End to end with a real Prometheus (Debian's 2.42, `make tools`) on loopback: it scrapes
`rooivalk monitor serve` (a subprocess) and evaluates the shipped alert rules (their `for:` cut to
seconds); same-distribution batches raise no alert, drifted batches take RooivalkDataDrift through
pending to firing, and the webhook receiver gets exactly one retraining event. No mocks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from rooivalk._dev.servers import free_port
from rooivalk.monitoring.alert_rules import DATA_DRIFT_ALERT, prometheus_rule_groups
from tests.integration.test_local_pipeline import REPO
from tests.unit.monitoring.receiver import Receiver
from tests.unit.monitoring.synthetic import NUMERIC, make_data, save_reference

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _post(url: str, frame: Any) -> int:
    body = json.dumps({"columns": frame.to_dict(orient="list")}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _alert_states(prometheus: str) -> set[str]:
    alerts = _get(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
    return {alert["state"] for alert in alerts if alert["labels"]["alertname"] == DATA_DRIFT_ALERT}


def test_drift_alert_goes_pending_then_firing_and_one_retraining_event_is_sent(tmp_path: Path) -> None:
    assert Path(PROMETHEUS).exists(), "prometheus is missing: `make tools` installs it (Debian's prometheus)"
    receiver = Receiver()
    reference = save_reference(tmp_path / "reference")
    monitor_port, prometheus_port = free_port(), free_port()
    plan = {
        "name": "drift-e2e",
        "data": {"source": "unused", "format": "image_folder"},
        "model": {"architecture": "test_efficientnet"},
        "monitoring": {
            "reference_uri": reference,
            "window_rows": 600,
            "min_rows": 300,
            "check_interval_s": 1,
            "state_uri": str(tmp_path / "state"),
            "webhook": {"url": receiver.url, "backoff_s": 0.2},
        },
    }
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(prometheus_rule_groups(alert_for="6s", stale_after="10m")))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yaml")],
        "scrape_configs": [
            {"job_name": "rooivalk-monitor", "static_configs": [{"targets": [f"127.0.0.1:{monitor_port}"]}]}
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    monitor_log = (tmp_path / "monitor.log").open("w")
    monitor = subprocess.Popen(
        [sys.executable, "-m", "rooivalk.cli.app", "monitor", "serve", "--plan", str(tmp_path / "plan.yaml"),
         "--port", str(monitor_port), "--model", "counter-drone"],
        stdout=monitor_log, stderr=subprocess.STDOUT, cwd=REPO,
    )  # fmt: skip
    prometheus_log = (tmp_path / "prometheus.log").open("w")
    prometheus = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prometheus_port}"],
        stdout=prometheus_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    service, api = f"http://127.0.0.1:{monitor_port}", f"http://127.0.0.1:{prometheus_port}"
    try:
        _wait(lambda: _get(f"{service}/healthz")["status"] == "ok", 60, "the monitor service")
        _wait(lambda: urllib.request.urlopen(f"{api}/-/ready", timeout=2).status == 200, 60, "prometheus")

        # Same distribution: checks run, Prometheus scrapes them, no alert.
        for seed in range(4):
            assert _post(f"{service}/batches", make_data(300, seed=100 + seed)[0]) == 202
        up = 'rooivalk_drift_detected{model="counter-drone"}'
        _wait(lambda: _get(f"{api}/api/v1/query?query={urllib.request.quote(up)}")["data"]["result"], 30, "a scrape")
        time.sleep(8)  # longer than the alert's for:
        assert _alert_states(api) == set()
        assert receiver.events == []

        # Drift: the window fills with shifted rows; the alert goes pending, then firing after for:.
        shifted = dict.fromkeys(NUMERIC, 0.8)
        for seed in range(2):
            assert _post(f"{service}/batches", make_data(300, seed=200 + seed, mean_shift=shifted)[0]) == 202
        _wait(lambda: "pending" in _alert_states(api), 30, "the alert to go pending")
        _wait(lambda: "firing" in _alert_states(api), 30, "the alert to fire")
        firing = next(a for a in _get(f"{api}/api/v1/alerts")["data"]["alerts"] if a["state"] == "firing")
        assert firing["labels"]["model"] == "counter-drone"
        time.sleep(3)  # more checks of the still-drifted window: still one event
        assert len(receiver.events) == 1
        assert receiver.events[0]["model"] == "counter-drone"
        assert receiver.events[0]["drift_share"] >= 0.5
    finally:
        for process in (monitor, prometheus):
            process.terminate()
            process.wait(timeout=30)
        receiver.close()
    assert (tmp_path / "state" / "window.parquet").exists()  # saved on SIGTERM
