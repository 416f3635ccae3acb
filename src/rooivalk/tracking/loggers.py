"""Metric loggers beside MLflow (`tracking.loggers`): a CSV file and TensorBoard event files per step.

Every metric a step logs (per-epoch training curves, final scores) also goes to the step's loggers.
They write into a local folder while the step runs; when it ends, whether it succeeded or failed, the
folder is logged to the step's MLflow run under `logs/` and, with `tracking.log_uri`, copied to
`<log_uri>/<pipeline run id>/<step>/` (any storage URI), so `tensorboard --logdir <log_uri>` shows every
step of every run side by side. TensorBoard files come from tensorboardX, which writes the event
format without TensorFlow or the tensorboard server package.
"""

from __future__ import annotations

import csv
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from rooivalk import storage

log = logging.getLogger(__name__)

CSV_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"


class MetricLogger(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...
    def close(self) -> None: ...


class CsvLogger:
    """metrics.csv: one row per (time, step, metric, value), flushed at every call (a killed pod keeps
    what it logged)."""

    def __init__(self, folder: Path) -> None:
        self._file = (folder / CSV_FILE).open("w", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(["time", "step", "metric", "value"])

    def log(self, metrics: dict[str, float], step: int) -> None:
        now = time.time()
        self._writer.writerows([now, step, name, float(value)] for name, value in metrics.items())
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardLogger:
    """TensorBoard scalars: one tag per metric, `step` on the x axis."""

    def __init__(self, folder: Path) -> None:
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(logdir=str(folder / TENSORBOARD_DIR), flush_secs=5)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self._writer.add_scalar(name, float(value), step)

    def close(self) -> None:
        self._writer.close()


_LOGGERS: dict[str, type[CsvLogger] | type[TensorBoardLogger]] = {"csv": CsvLogger, "tensorboard": TensorBoardLogger}


class StepLoggers:
    """The step's loggers named in the plan; nothing is written when the list is empty."""

    def __init__(self, names: list[str], prefix: str = "rooivalk-logs-") -> None:
        self.folder: Path | None = Path(tempfile.mkdtemp(prefix=prefix)) if names else None
        self._loggers: list[MetricLogger] = [_LOGGERS[name](self.folder) for name in names] if self.folder else []

    def log(self, metrics: dict[str, float], step: int = 0) -> None:
        for logger in self._loggers:
            logger.log(metrics, step)

    def close(self, log_uri: str | None, pipeline_run_id: str, step: str) -> str | None:
        """Close every logger and copy the folder to `<log_uri>/<pipeline run id>/<step>`; returns the
        local folder (to be logged to MLflow), or None when no logger ran."""
        for logger in self._loggers:
            logger.close()
        self._loggers = []
        if self.folder is None:
            return None
        if log_uri:
            target = f"{log_uri.rstrip('/')}/{pipeline_run_id}/{step}"
            storage.copy_folder(str(self.folder), target)
            log.info("step %s: metric logs at %s", step, target)
        return str(self.folder)


def read_csv_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a metrics.csv, values as floats and steps as ints."""
    with Path(path).open(newline="") as file:
        return [
            {
                "time": float(row["time"]),
                "step": int(row["step"]),
                "metric": row["metric"],
                "value": float(row["value"]),
            }
            for row in csv.DictReader(file)
        ]
