"""Which precision ships: every variant scored on the test split, the fastest within tolerance wins.

A variant passes when its test accuracy is at most the model's tolerance below the FP32 ONNX
model's (the verified source, which always passes); a model scored otherwise passes on its own
`score` (a detector: mAP@0.5), the tolerance then in that score's units, and its metrics and report
say `test_<metric>`, `<metric>_drop` and `agreement` for test accuracy, accuracy drop and top-1
agreement. Among the passing variants the one with the lowest median batch-1 latency on this device
ships: on a CPU, INT8 usually; on a GPU node FP16 can win. Every variant that does not ship says why
(built but too inaccurate, slower, or not buildable), and the per-model latency budget is checked on
the shipped variant's p95.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rooivalk.export.benchmark import LatencyStats, ort_session
from rooivalk.export.quantize import QuantizeConfig
from rooivalk.export.variants import VariantError, build_variant
from rooivalk.plan import ModelExportSpec, QuantizationSpec

log = logging.getLogger(__name__)

# predict(session) -> predicted class per test sample (N,); time(session) -> batch-1 latency.
Predict = Callable[[Any], np.ndarray]
Time = Callable[[Any], LatencyStats]
# With a `score`: predict(session) -> any predictions (ScoredPredict), score(predictions) -> the test
# score (higher is better), agreement(predictions, fp32 predictions) -> a share in [0, 1].
ScoredPredict = Callable[[Any], Any]
Score = Callable[[Any], float]
Agreement = Callable[[Any, Any], float]
ACCURACY = "accuracy"


@dataclass
class VariantScore:
    precision: str
    file: str | None
    test_accuracy: float | None = None
    accuracy_drop: float | None = None
    top1_agreement: float | None = None  # share of test samples where it predicts what FP32 predicts
    latency_ms: float | None = None  # median, batch 1
    latency_p95_ms: float | None = None
    size_mb: float | None = None
    passed: bool = False
    reason: str = ""


@dataclass
class ModelExport:
    """One model's variants, the shipped one, and what was measured on it."""

    name: str
    tolerance: float
    budget_ms: float | None
    scores: dict[str, VariantScore]
    paths: dict[str, Path]
    chosen: str = "fp32"
    # Measured on the shipped variant after the choice: temperature, ECE before/after, TensorRT latencies.
    measured: dict[str, float] = field(default_factory=dict)
    # What test_accuracy, accuracy_drop and the tolerance measure: "accuracy", or a score_variants
    # `score` (e.g. "map50"), which metrics() and report() then name test_<metric>, <metric>_drop, agreement.
    metric: str = ACCURACY

    @property
    def shipped(self) -> VariantScore:
        return self.scores[self.chosen]

    def choose(self) -> str:
        """The fastest passing variant; others that passed are marked slower."""
        passing = [s for s in self.scores.values() if s.passed and s.latency_ms is not None]
        best = min(passing, key=lambda s: s.latency_ms or 0.0)
        self.chosen = best.precision
        for score in passing:
            if score is not best:
                score.reason = (
                    f"passed, but {score.latency_ms:.3f} ms is slower than {best.precision} ({best.latency_ms:.3f} ms)"
                )
        best.reason = "shipped: fastest variant within tolerance"
        return self.chosen

    def fall_back_to_fp32(self, reason: str) -> None:
        """Ship FP32 instead (a system-level gate failed with this model's variant)."""
        if self.chosen == "fp32":
            return
        self.scores[self.chosen].reason = f"passed alone, not shipped: {reason}"
        self.chosen = "fp32"
        self.scores["fp32"].reason = f"shipped: fallback ({reason})"

    def budget_gate(self) -> dict[str, Any] | None:
        """{metric, value, min, max, passed} for the latency budget: p95 of the shipped TensorRT engine
        where one was built (what a GPU node runs), else of the shipped ONNX variant."""
        if self.budget_ms is None:
            return None
        value = self.measured.get("tensorrt_latency_p95_ms", self.shipped.latency_p95_ms)
        passed = value is not None and value <= self.budget_ms
        return {
            "metric": f"{self.name}_latency_p95_ms",
            "value": value,
            "min": None,
            "max": self.budget_ms,
            "passed": passed,
        }

    def key(self, field_name: str) -> str:
        """A VariantScore field's name in metrics and reports: itself for accuracy, else the metric's."""
        if self.metric == ACCURACY:
            return field_name
        names = {"test_accuracy": f"test_{self.metric}", "accuracy_drop": f"{self.metric}_drop"}
        return names.get(field_name, "agreement" if field_name == "top1_agreement" else field_name)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for precision, score in self.scores.items():
            for key in ("test_accuracy", "accuracy_drop", "top1_agreement", "latency_ms", "latency_p95_ms", "size_mb"):
                value = getattr(score, key)
                if value is not None:
                    out[f"{self.name}_{precision}_{self.key(key)}"] = float(value)
        shipped = self.shipped
        out[f"{self.name}_latency_ms"] = float(shipped.latency_ms or 0.0)
        out[f"{self.name}_latency_p95_ms"] = float(shipped.latency_p95_ms or 0.0)
        out[f"{self.name}_{self.key('accuracy_drop')}"] = float(shipped.accuracy_drop or 0.0)
        out[f"{self.name}_size_mb"] = float(shipped.size_mb or 0.0)
        out.update({f"{self.name}_{key}": value for key, value in self.measured.items()})
        return out

    def report(self) -> dict[str, Any]:
        report = {
            "shipped": self.chosen,
            "tolerance": self.tolerance,
            "latency_budget_ms": self.budget_ms,
            "variants": {p: {self.key(k): v for k, v in asdict(score).items()} for p, score in self.scores.items()},
            "measured": self.measured,
        }
        return report if self.metric == ACCURACY else {"metric": self.metric, **report}

    def summary(self) -> str:
        parts = [f"{self.name}: ships {self.chosen}"]
        for precision, score in self.scores.items():
            if precision != self.chosen and not score.passed:
                parts.append(f"{precision} {score.reason}")
        return "; ".join(parts)


def quantize_config(spec: QuantizationSpec, qat: bool = False) -> QuantizeConfig:
    """The static INT8 settings of a model; `qat`: it was fine-tuned with training.qat (operators: auto
    then quantizes what that simulated, the weighted nodes)."""
    operators = spec.operators if spec.operators != "auto" else ("weighted" if qat else "all")
    return QuantizeConfig(
        method=spec.method, per_channel=spec.per_channel, percentile=spec.percentile, operators=operators
    )


def build_variants(
    name: str,
    fp32_path: Path,
    out_dir: Path,
    spec: ModelExportSpec,
    calibration: dict[str, np.ndarray] | None,
    quantization: QuantizationSpec,
    say: Callable[[str], None],
    qat: bool = False,
) -> tuple[dict[str, Path], dict[str, str]]:
    """(built variant paths by precision, reasons of the ones that could not be built); `qat`: the model
    was fine-tuned with training.qat."""
    paths: dict[str, Path] = {"fp32": fp32_path}
    failures: dict[str, str] = {}
    config = quantize_config(quantization, qat)
    for precision in spec.precisions or ["fp32"]:
        if precision == "fp32":
            continue
        what = f"static QDQ, {config.method}" if precision == "int8_static" else precision
        say(f"{name}: building {precision} ({what})")
        try:
            path = build_variant(precision, fp32_path, out_dir, calibration, config)
        except (VariantError, ValueError) as error:
            failures[precision] = f"not built: {error}"
            log.warning("%s: %s variant not built: %s", name, precision, error)
            continue
        crash = probe_in_subprocess(path)
        if crash:
            path.unlink(missing_ok=True)
            failures[precision] = f"not shipped: {crash}"
            log.warning("%s: %s variant dropped: %s", name, precision, crash)
            continue
        paths[precision] = path
    return paths, failures


_PROBE = """
import sys, numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
feeds = {}
for i in session.get_inputs():
    shape = [1] + [d if isinstance(d, int) else 1 for d in i.shape[1:]]
    types = {"tensor(bool)": bool, "tensor(int64)": np.int64}  # an rnn's lengths are int64
    feeds[i.name] = np.zeros(shape, types.get(i.type, np.float32))
session.run(None, feeds)
"""


def probe_in_subprocess(path: Path, timeout: float = 300) -> str | None:
    """Load and run `path` once in a child process; a description of the crash, or None when it runs.

    ONNX Runtime can crash the process (SIGSEGV) on a graph it accepts at load time: measured on the
    RF CNN+Transformer's FP16 graph with onnxruntime 1.31.1. A crash there must cost one variant,
    not the export step, so every variant is opened in a child process before this one loads it.
    """
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return f"ONNX Runtime did not finish one batch-1 run of {path.name} within {timeout:.0f} s"
    if done.returncode == 0:
        return None
    if done.returncode < 0:
        return f"ONNX Runtime crashed running {path.name} (signal {signal.Signals(-done.returncode).name})"
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return f"ONNX Runtime cannot run {path.name}: {last}"


def score_variants(
    name: str,
    paths: dict[str, Path],
    failures: dict[str, str],
    labels: np.ndarray,
    predict: Predict | ScoredPredict,
    time: Time,
    spec: ModelExportSpec,
    say: Callable[[str], None],
    score: Score | None = None,
    agreement: Agreement | None = None,
    metric: str = ACCURACY,
) -> ModelExport:
    """Score every variant on the test split (accuracy, agreement with FP32, latency, size) and choose.

    With `score`, it replaces the accuracy of `predict`'s output against `labels` (then only their count
    is used) and `agreement` the top-1 agreement (none without it); `metric` names the score, and the
    model's max_accuracy_drop is the largest FP32-minus-variant drop of that score that passes.
    """
    tolerance = float(spec.max_accuracy_drop or 0.0)
    scores: dict[str, VariantScore] = {p: VariantScore(p, None, reason=why) for p, why in failures.items()}
    reference: np.ndarray | None = None
    base_accuracy = 0.0
    for precision, path in paths.items():  # fp32 first: every other variant is compared with it
        session = ort_session(path)
        say(f"{name}: scoring {precision} on {len(labels)} test samples")
        predictions = predict(session)
        if score is None:
            accuracy = float((predictions == labels).mean()) if len(labels) else 0.0
        else:
            accuracy = float(score(predictions))
        if reference is None:
            reference, base_accuracy = predictions, accuracy
        latency = time(session)
        drop = base_accuracy - accuracy
        passed = drop <= tolerance + 1e-12
        if score is None:
            agree: float | None = float((predictions == reference).mean()) if len(labels) else 1.0
        else:
            agree = None if agreement is None else float(agreement(predictions, reference))
        scores[precision] = VariantScore(
            precision=precision,
            file=path.name,
            test_accuracy=accuracy,
            accuracy_drop=drop,
            top1_agreement=agree,
            latency_ms=latency.median_ms,
            latency_p95_ms=latency.p95_ms,
            size_mb=path.stat().st_size / 1e6,
            passed=passed,
            reason="" if passed else f"{metric} drop {100 * drop:.2f} pt > tolerance {100 * tolerance:.2f} pt",
        )
    result = ModelExport(name, tolerance, spec.latency_budget_ms, scores, paths, metric=metric)
    result.choose()
    say(result.summary())
    return result
