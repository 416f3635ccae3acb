"""rooivalk.export.selection: the shipped variant is the fastest within tolerance, and the rest say why.

The scoring runs on fake sessions (predictions and latencies chosen by the test), so every branch
of the choice is exercised deterministically; the real ONNX path is covered by test_export.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rooivalk.export import selection
from rooivalk.export.benchmark import LatencyStats
from rooivalk.export.shipping import budget_gates
from rooivalk.plan import DataSpec, ExportSpec, ModelExportSpec, ModelSpec, Plan

LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])


def _score(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variants: dict[str, tuple[int, float]], tolerance: float
) -> selection.ModelExport:
    """variants: precision -> (how many test predictions it gets wrong, median latency in ms)."""
    paths = {}
    for precision in variants:
        path = tmp_path / f"model_{precision}.onnx"
        path.write_bytes(b"x" * (400 if precision == "fp32" else 100))
        paths[precision] = path
    monkeypatch.setattr(selection, "ort_session", lambda path: Path(path).stem.removeprefix("model_"))

    def predict(session: Any) -> np.ndarray:
        wrong = variants[session][0]
        predictions = LABELS.copy()
        predictions[:wrong] = (predictions[:wrong] + 1) % 3
        return predictions

    def time(session: Any) -> LatencyStats:
        return LatencyStats(median_ms=variants[session][1], p95_ms=variants[session][1] * 1.5, runs=100)

    spec = ModelExportSpec(max_accuracy_drop=tolerance, latency_budget_ms=5.0, precisions=list(variants))
    return selection.score_variants("optical", paths, {}, LABELS, predict, time, spec, lambda _m: None)


def test_the_fastest_variant_within_tolerance_ships(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    variants = {"fp32": (0, 10.0), "fp16": (0, 6.0), "int8_static": (1, 2.0), "int8_dynamic": (0, 8.0)}
    choice = _score(tmp_path, monkeypatch, variants, tolerance=0.05)
    # int8_static is fastest but loses 1 of 10 answers (10 points > 5): fp16 is the fastest that passes.
    assert choice.chosen == "fp16"
    assert not choice.scores["int8_static"].passed
    assert choice.scores["int8_static"].reason == "accuracy drop 10.00 pt > tolerance 5.00 pt"
    assert choice.scores["int8_dynamic"].passed
    assert "slower than fp16" in choice.scores["int8_dynamic"].reason
    assert choice.scores["fp16"].reason.startswith("shipped")
    assert choice.scores["int8_static"].top1_agreement == pytest.approx(0.9)
    metrics = choice.metrics()
    assert metrics["optical_latency_ms"] == 6.0
    assert metrics["optical_latency_p95_ms"] == 9.0
    assert metrics["optical_int8_static_accuracy_drop"] == pytest.approx(0.1)
    assert choice.report()["shipped"] == "fp16"


def test_fp32_ships_when_no_variant_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    choice = _score(tmp_path, monkeypatch, {"fp32": (0, 10.0), "int8_static": (2, 1.0)}, tolerance=0.0)
    assert choice.chosen == "fp32"
    assert "accuracy drop 20.00 pt" in choice.summary()


def test_a_variant_that_could_not_be_built_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selection, "build_variant", _fails_for_int8)
    fp32 = tmp_path / "model_fp32.onnx"
    fp32.write_bytes(b"x")
    spec = ModelExportSpec(precisions=["fp32", "int8_static"])
    paths, failures = selection.build_variants("rf", fp32, tmp_path, spec, None, ExportSpec().quantization, print)
    assert paths == {"fp32": fp32}
    assert failures == {"int8_static": "not built: int8_static needs calibration samples"}


def _fails_for_int8(*_args: Any) -> Path:
    raise ValueError("int8_static needs calibration samples")


def test_budget_gates_use_the_shipped_p95_and_the_end_to_end_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    choice = _score(tmp_path, monkeypatch, {"fp32": (0, 4.0), "fp16": (0, 3.0)}, tolerance=0.0)
    plan = Plan(
        name="p",
        data=DataSpec(source="x", format="idx"),
        model=ModelSpec(architecture="test_efficientnet"),
        export=ExportSpec(end_to_end_budget_ms=4.0),
    )
    gates = budget_gates(plan, [choice], end_to_end_p95_ms=4.5)
    assert gates[0] == {"metric": "optical_latency_p95_ms", "value": 4.5, "min": None, "max": 5.0, "passed": True}
    assert gates[1]["metric"] == "end_to_end_latency_p95_ms"
    assert gates[1]["passed"] is False
    choice.measured["tensorrt_latency_p95_ms"] = 6.0  # a shipped engine's latency is what the budget sees
    assert budget_gates(plan, [choice], None)[0]["passed"] is False


def test_fall_back_to_fp32_keeps_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    choice = _score(tmp_path, monkeypatch, {"fp32": (0, 4.0), "fp16": (0, 3.0)}, tolerance=0.0)
    choice.fall_back_to_fp32("the system's export gates failed with it")
    assert choice.chosen == "fp32"
    assert "not shipped: the system's export gates failed" in choice.scores["fp16"].reason


def test_plan_rejects_export_settings_for_unknown_models_and_candidates_without_fp32() -> None:
    with pytest.raises(ValueError, match=r"export.models: unknown model\(s\) \['optical'\]"):
        Plan(
            name="p",
            data=DataSpec(source="x", format="idx"),
            model=ModelSpec(architecture="test_efficientnet"),
            export={"models": {"optical": {}}},
        )
    with pytest.raises(ValueError, match="export.precisions: must include fp32"):
        ExportSpec(precisions=["int8_static"])
    with pytest.raises(ValueError, match="latency_runs"):
        ExportSpec(latency_runs=50)  # the floor: p95 over at least 100 runs


def test_a_variant_onnx_runtime_cannot_run_is_dropped_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "model_fp16.onnx"

    def build(*_args: Any) -> Path:
        broken.write_bytes(b"not an onnx graph")  # loads in no runtime; the child process reports it
        return broken

    monkeypatch.setattr(selection, "build_variant", build)
    fp32 = tmp_path / "model_fp32.onnx"
    fp32.write_bytes(b"x")
    spec = ModelExportSpec(precisions=["fp32", "fp16"])
    paths, failures = selection.build_variants("rf", fp32, tmp_path, spec, None, ExportSpec().quantization, print)
    assert paths == {"fp32": fp32}
    assert failures["fp16"].startswith("not shipped: ONNX Runtime cannot run model_fp16.onnx")
    assert not broken.exists()


def test_static_int8_quantizes_what_qat_simulated_unless_the_plan_says_otherwise() -> None:
    from rooivalk.export.selection import quantize_config
    from rooivalk.plan import QuantizationSpec

    assert quantize_config(QuantizationSpec()).operators == "all"
    assert quantize_config(QuantizationSpec(), qat=True).operators == "weighted"
    assert quantize_config(QuantizationSpec(operators="all"), qat=True).operators == "all"
    assert quantize_config(QuantizationSpec(operators="weighted")).operators == "weighted"
