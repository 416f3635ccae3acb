"""The multi-sensor system scored through ONNX Runtime alone: every sensor's shipped encoder, then the
fusion model on their embeddings, for any choice of precision per model (the system's export gates)."""

from __future__ import annotations

from typing import Any

import numpy as np

from rooivalk.export.benchmark import ort_session
from rooivalk.export.onnx_export import run_batched
from rooivalk.export.selection import ModelExport
from rooivalk.export.sensor_export import SAMPLES, SensorExport

FUSION = "fusion"  # the fusion model's name in export settings, variants and bundles
PRESENT = "present"  # the fusion model's presence-mask input (N, S)


class SystemScorer:
    """Test accuracy of the system through ONNX Runtime only, for any choice of variant per model.
    Each encoder variant runs once over the rows (cached); a choice then only re-runs the fusion model."""

    def __init__(
        self, sensors: dict[str, SensorExport], choices: dict[str, ModelExport], rows: np.ndarray, order: list[str]
    ) -> None:
        self.sensors, self.choices, self.rows = sensors, choices, rows
        dataset = next(iter(sensors.values())).dataset
        self.labels = dataset.labels[rows]
        # (N, S) in the fusion model's sensor order: the ONNX "present" input's columns.
        self.present = np.stack([dataset.present_of(name)[rows] for name in order], axis=1)
        self._embeddings: dict[tuple[str, str], np.ndarray] = {}
        self._sessions: dict[tuple[str, str], Any] = {}

    def session(self, model: str, precision: str) -> Any:
        key = (model, precision)
        if key not in self._sessions:
            self._sessions[key] = ort_session(self.choices[model].paths[precision])
        return self._sessions[key]

    def embeddings(self, sensor: str, precision: str) -> np.ndarray:
        key = (sensor, precision)
        if key not in self._embeddings:
            export = self.sensors[sensor]
            have = export.dataset.present_of(sensor)[self.rows]
            session = self.session(sensor, precision)
            out = run_batched(session, {SAMPLES: export.inputs(self.rows)})[0]
            dim = out.shape[1] if len(out) else int(session.getrun_batched()[0].shape[1])
            matrix = np.zeros((int(self.rows.sum()), dim), np.float32)  # absent sensors: zeros, masked
            matrix[have] = out
            self._embeddings[key] = matrix
        return self._embeddings[key]

    def feeds(self, precisions: dict[str, str]) -> dict[str, np.ndarray]:
        feeds = {name: self.embeddings(name, precisions.get(name, "fp32")) for name in self.sensors}
        return {**feeds, PRESENT: self.present}

    def logits(self, precisions: dict[str, str]) -> np.ndarray:
        return run_batched(self.session(FUSION, precisions.get(FUSION, "fp32")), self.feeds(precisions))[0]

    def accuracy(self, precisions: dict[str, str]) -> float:
        return float((self.logits(precisions).argmax(1) == self.labels).mean())
