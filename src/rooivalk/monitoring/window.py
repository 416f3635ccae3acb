"""The monitor service's sliding window: the newest `capacity` production rows, persisted to a
storage URI so that a restart resumes with the same window (not an empty one that hides drift)."""

from __future__ import annotations

import io
import threading
from collections import deque

import pandas as pd

from rooivalk import storage

WINDOW_FILE = "window.parquet"


class SlidingWindow:
    """Batches kept as they arrived (no copy per append); the oldest rows drop out once more than
    `capacity` are held. Thread-safe: the HTTP handlers append while the checker reads."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._batches: deque[pd.DataFrame] = deque()
        self._rows = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._rows

    def append(self, batch: pd.DataFrame) -> None:
        with self._lock:
            if len(batch) >= self.capacity:
                self._batches.clear()
                batch = batch.iloc[-self.capacity :]
                self._rows = 0
            self._batches.append(batch)
            self._rows += len(batch)
            while self._rows - len(self._batches[0]) >= self.capacity:
                self._rows -= len(self._batches.popleft())
            excess = self._rows - self.capacity
            if excess > 0:
                self._batches[0] = self._batches[0].iloc[excess:]
                self._rows -= excess

    def frame(self) -> pd.DataFrame:
        """The window's rows, oldest first (a copy: the checker may take its time)."""
        with self._lock:
            batches = list(self._batches)
        return pd.concat(batches, ignore_index=True) if batches else pd.DataFrame()

    def save(self, uri: str) -> str:
        buffer = io.BytesIO()
        self.frame().to_parquet(buffer, index=False)
        return storage.write_bytes(f"{uri}/{WINDOW_FILE}", buffer.getvalue())

    def load(self, uri: str) -> bool:
        """Resume from `uri` if a window was saved there; False when there was none."""
        if not storage.exists(f"{uri}/{WINDOW_FILE}"):
            return False
        frame = pd.read_parquet(io.BytesIO(storage.read_bytes(f"{uri}/{WINDOW_FILE}")))
        with self._lock:
            self._batches.clear()
            self._rows = 0
        if len(frame):
            self.append(frame)
        return True
