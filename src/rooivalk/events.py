"""Step events: progress and step records, sent from pipeline steps to whoever runs the pipeline.

`rooivalk run` sets ROOIVALK_EVENTS_FILE; each step (a separate process under kfp.local) appends one
JSON object per line. The CLI tails the file for its progress display and builds summary.json from
the step records. Without the variable (a cluster pod), step records go to the log as JSON lines
and batch-level progress is dropped.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

# What long work reports through: a progress event ({"event": "epoch_end", ...}), and per-epoch
# metrics with their step (MLflow's step axis).
ProgressFn = Callable[[dict[str, Any]], None]
MetricsFn = Callable[[dict[str, float], int], None]

EVENTS_ENV = "ROOIVALK_EVENTS_FILE"
STEP_ENV = "ROOIVALK_STEP"
_QUIET_EVENTS = {"batch"}


def emit(event: dict[str, Any]) -> None:
    record = {"time": time.time(), **event}
    line = json.dumps(record, default=str) + "\n"
    path = os.environ.get(EVENTS_ENV)
    if path:
        # O_APPEND makes each small write land whole even with several writers.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    elif event.get("event") not in _QUIET_EVENTS:
        sys.stdout.write("rooivalk-event " + line)
        sys.stdout.flush()


class StepEmitter:
    """emit() for one step's progress: tags events with the step and throttles batch events."""

    def __init__(self, step: str, interval_s: float = 0.25) -> None:
        self.step, self.interval_s, self._last = step, interval_s, 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") == "batch":
            now = time.monotonic()
            if now - self._last < self.interval_s:
                return
            self._last = now
        emit({**event, "step": self.step})


def read_events(path: str, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete lines after `offset`; returns (events, new offset)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    events = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return events, offset + end
