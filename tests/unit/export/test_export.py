"""rooivalk.export on tiny models: static padding, ONNX round trip, INT8, latency, the whole step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rooivalk.data.dataset import DatasetInfo, save_arrays, save_info
from rooivalk.data.transforms import to_model_input
from rooivalk.evaluation import GateFailure
from rooivalk.export import (
    ExportError,
    LatencyStats,
    Predictor,
    export_model,
    export_onnx,
    measure_latency,
    onnx_accuracy,
    ort_session,
    pipeline_step,
    quantize_int8,
    replace_conv2d_same,
    verify_onnx,
)
from rooivalk.export.onnx_export import Verification
from rooivalk.models import ModelInfo, create_model, normalization, save_trained_model
from rooivalk.plan import DataSpec, ExportSpec, Gate, ModelExportSpec, ModelSpec, Plan, QuantizationSpec

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def _same_padded_net(num_classes: int = 3) -> nn.Module:
    """Every dynamic-'SAME' layer type timm has, at strides and kernels whose pads are asymmetric."""
    create_model  # noqa: B018  (importing rooivalk.models applies the torchvision fix before timm)
    from timm.layers import AvgPool2dSame, Conv2dSame, StdConv2dSame
    from timm.layers.pool2d_same import MaxPool2dSame

    return nn.Sequential(
        Conv2dSame(3, 8, 3, stride=2, bias=True),
        nn.ReLU(),
        StdConv2dSame(8, 8, 3, stride=2),
        nn.ReLU(),
        MaxPool2dSame(3, stride=2),
        Conv2dSame(8, 8, 5, stride=1, groups=8),
        AvgPool2dSame(2, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    ).eval()


def _synthetic(count: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, size, size, 1) images whose class is which third of the image (top/middle/bottom) is bright."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    images = rng.integers(0, 60, (count, size, size, 1))
    band = size // 3
    for index, label in enumerate(labels):
        images[index, label * band : (label + 1) * band] += 150
    return images.astype(np.uint8), labels.astype(np.int64)


def test_replace_conv2d_same_is_bit_identical_on_tiny_net() -> None:
    model = _same_padded_net()
    static = replace_conv2d_same(model, 17)  # odd size: every pad is asymmetric somewhere
    x = torch.randn(2, 3, 17, 17)
    with torch.no_grad():
        assert torch.equal(model(x), static(x))
    names = {type(m).__name__ for m in static.modules()}
    assert not names & {"Conv2dSame", "MaxPool2dSame", "AvgPool2dSame"}
    assert any(isinstance(m, nn.Conv2d) and type(m).__name__ == "Conv2dSame" for m in model.modules())


def test_replace_conv2d_same_is_bit_identical_on_efficientnet_lite0() -> None:
    torch.manual_seed(0)
    model = create_model(ModelSpec(architecture="tf_efficientnet_lite0", input_size=48), 3).eval()
    static = replace_conv2d_same(model, 48)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(model(x), static(x))
    assert not any(type(m).__name__ == "Conv2dSame" for m in static.modules())


def test_export_onnx_matches_torch_with_dynamic_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _same_padded_net()
    path = export_onnx(replace_conv2d_same(model, 16), 16, 3, tmp_path / "m.onnx")
    assert path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary left behind
    assert verify_onnx(model, path, torch.randn(5, 3, 16, 16)) < 1e-5
    session = ort_session(path)
    assert session.run(None, {"input": np.zeros((3, 3, 16, 16), np.float32)})[0].shape == (3, 3)


def _train_tiny(model: nn.Module, images: np.ndarray, labels: np.ndarray, size: int) -> nn.Module:
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    inputs, targets = to_model_input(images, size, MEAN, STD, 3), torch.from_numpy(labels)
    model.train()
    for _ in range(60):
        loss = nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_int8_model_keeps_accuracy_on_separable_data(tmp_path: Path) -> None:
    images, labels = _synthetic(300)
    model = _train_tiny(_same_padded_net(), images[:200], labels[:200], 16)
    fp32 = export_onnx(replace_conv2d_same(model, 16), 16, 3, tmp_path / "fp32.onnx")
    int8 = quantize_int8(fp32, tmp_path / "int8.onnx", images[:64], 16, MEAN, STD, 3)
    test_images, test_labels = images[200:], labels[200:]
    fp32_accuracy = onnx_accuracy(ort_session(fp32), test_images, test_labels, 16, MEAN, STD, 3)
    int8_accuracy = onnx_accuracy(ort_session(int8), test_images, test_labels, 16, MEAN, STD, 3)
    assert fp32_accuracy >= 0.9
    assert int8_accuracy >= fp32_accuracy - 0.05
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32.onnx", "int8.onnx"]


def test_measure_latency_reports_median_and_p95() -> None:
    calls: list[int] = []
    stats = measure_latency(lambda x: calls.append(x), 1, runs=20, warmup=3)
    assert isinstance(stats, LatencyStats)
    assert stats.runs == 20
    assert len(calls) == 23
    assert 0 <= stats.median_ms <= stats.p95_ms
    with pytest.raises(ValueError, match="runs"):
        measure_latency(lambda x: x, 1, runs=0, warmup=0)


def _tiny_artifacts(root: Path) -> tuple[Plan, str, str]:
    """A trained-model dir (random test_efficientnet, 3 classes, 32 px) and a 28x28 grayscale dataset dir."""
    spec = ModelSpec(architecture="test_efficientnet", input_size=32)
    plan = Plan(
        name="tiny",
        data=DataSpec(source=str(root / "raw"), format="idx"),
        model=spec,
        export=ExportSpec(
            precisions=["fp32", "fp16", "int8_static", "int8_dynamic"],
            quantization=QuantizationSpec(samples=16),
            max_accuracy_drop=1.0,  # a random model: every variant may ship; the choice is then by speed
            latency_runs=100,
            latency_warmup=2,
            gates=[Gate(metric="model_size_mb", max=100.0), Gate(metric="speedup_vs_torch", min=1e6)],
            fail_on_gate=False,
        ),
    )
    torch.manual_seed(0)
    model = create_model(spec, 3).eval()
    mean, std = normalization(model)
    model_dir, dataset_dir = str(root / "model"), str(root / "dataset")
    info = ModelInfo(
        spec=spec,
        classes=["a", "b", "c"],
        input_size=32,
        in_chans=3,
        mean=mean,
        std=std,
        dataset_version="v1",
        plan_digest=plan.digest(),
    )
    save_trained_model(model_dir, model, info)
    images, labels = _synthetic(72, size=28)
    splits = np.array([0] * 24 + [1] * 32 + [2] * 16, dtype=np.int8)  # >= 20 val samples: temperature fits
    save_arrays(dataset_dir, images, labels, splits)
    save_info(
        dataset_dir,
        DatasetInfo(
            version_id="v1",
            source="synthetic",
            format="idx",
            classes=["a", "b", "c"],
            image_shape=(28, 28, 1),
            num_samples=72,
            split_sizes={"train": 24, "val": 32, "test": 16},
            class_balance={},
            split_seed=0,
            quarantined=0,
        ),
    )
    return plan, model_dir, dataset_dir


def _with_export(plan: Plan, **update: object) -> Plan:
    return plan.model_copy(update={"export": plan.export.model_copy(update=update)})


def test_export_model_ships_the_fastest_passing_variant_in_a_bundle(tmp_path: Path) -> None:
    plan, model_dir, dataset_dir = _tiny_artifacts(tmp_path)
    messages: list[str] = []
    result = export_model(plan, model_dir, dataset_dir, str(tmp_path / "export"), progress=messages.append)
    report = json.loads(Path(result.artifacts["export_report.json"]).read_text())
    choice = report["models"]["model"]
    variants = choice["variants"]
    assert set(variants) == {"fp32", "fp16", "int8_static", "int8_dynamic"}
    passing = {p: v["latency_ms"] for p, v in variants.items() if v["passed"]}
    assert choice["shipped"] == min(passing, key=passing.__getitem__)  # fastest within tolerance
    assert all(v["reason"] for v in variants.values())  # each variant says why it did or did not ship
    assert variants["fp32"]["accuracy_drop"] == 0
    assert variants["fp32"]["top1_agreement"] == 1
    for precision in ("fp16", "int8_static", "int8_dynamic"):
        assert variants[precision]["size_mb"] < variants["fp32"]["size_mb"]
    metrics = result.metrics
    assert metrics["onnx_max_abs_diff"] <= plan.export.max_abs_diff
    assert metrics["onnx_top1_agreement"] == 1.0
    assert metrics["model_latency_ms"] <= metrics["model_latency_p95_ms"]
    assert metrics["model_ece_after"] <= metrics["model_ece_before"] + 1e-6  # temperature fitted on val
    passed = [(gate["metric"], gate["passed"]) for gate in result.gates]
    assert passed == [("model_size_mb", True), ("speedup_vs_torch", False)]
    assert report["metrics"] == metrics
    assert report["environment"]["cpu_threads"] == torch.get_num_threads()
    export = tmp_path / "export"
    assert (export / "variants" / "model" / "model_fp32.onnx").is_file()
    kept = {p.name for p in (export / "variants" / "model").iterdir()}
    assert kept == {"model_fp32.onnx", f"model_{choice['shipped']}.onnx"}  # unshipped variants pruned
    bundle = export / "bundles" / "model"
    assert {"model.onnx", "bundle.json", "reliability.png"} <= {p.name for p in bundle.iterdir()}
    assert not [p for p in export.rglob(".*")]  # no temporaries
    predictor = Predictor.load(str(bundle))
    images, _ = _synthetic(5, size=28)
    probabilities = predictor.predict_proba(images)
    assert probabilities.shape == (5, 3)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    assert predictor.info.precision == choice["shipped"]
    assert predictor.info.temperature == pytest.approx(metrics["model_temperature"])
    assert any("ships" in m for m in messages)


def test_failing_export_gate_fails_after_writing_everything(tmp_path: Path) -> None:
    plan, model_dir, dataset_dir = _tiny_artifacts(tmp_path)
    with pytest.raises(GateFailure, match=r"speedup_vs_torch = .* \(needs >= 1000000.0\)"):
        export_model(_with_export(plan, fail_on_gate=True), model_dir, dataset_dir, str(tmp_path / "export"))
    report = json.loads((tmp_path / "export" / "export_report.json").read_text())
    assert report["passed"] is False
    assert (tmp_path / "export" / "bundles" / "model" / "bundle.json").is_file()


def test_latency_budgets_are_reported_per_model_and_end_to_end(tmp_path: Path) -> None:
    plan, model_dir, dataset_dir = _tiny_artifacts(tmp_path)
    plan = _with_export(
        plan,
        gates=[],
        precisions=["fp32"],
        models={"model": ModelExportSpec(latency_budget_ms=1e-6)},
        end_to_end_budget_ms=1e4,
    )
    result = export_model(plan, model_dir, dataset_dir, str(tmp_path / "export"))
    gates = {gate["metric"]: gate for gate in result.gates}
    assert gates["model_latency_p95_ms"]["passed"] is False
    assert gates["model_latency_p95_ms"]["value"] == result.metrics["model_latency_p95_ms"]
    assert gates["end_to_end_latency_p95_ms"]["passed"] is True


def test_gate_on_a_metric_not_measured_fails(tmp_path: Path) -> None:
    plan, model_dir, dataset_dir = _tiny_artifacts(tmp_path)
    plan = _with_export(plan, precisions=["fp32"], gates=[Gate(metric="model_int8_static_accuracy_drop", max=0.01)])
    result = export_model(plan, model_dir, dataset_dir, str(tmp_path / "export"))
    assert result.gates[0]["passed"] is False
    assert result.gates[0]["value"] is None
    assert "model_int8_static_test_accuracy" not in result.metrics


def test_export_model_rejects_mismatching_onnx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan, model_dir, dataset_dir = _tiny_artifacts(tmp_path)
    broken = Verification(max_abs_diff=0.5, max_rel_diff=0.1, top1_agreement=0.9, samples=16)
    monkeypatch.setattr(pipeline_step, "verify_module", lambda *args: broken)  # stands in for a broken exporter
    with pytest.raises(ExportError, match="max_abs_diff"):
        export_model(plan, model_dir, dataset_dir, str(tmp_path / "export"))
    assert not (tmp_path / "export" / "variants" / "model" / "model_fp32.onnx").exists()


def test_tensorrt_target_without_a_gpu_fails_before_any_work(tmp_path: Path) -> None:
    plan, model_dir, dataset_dir = _tiny_artifacts(tmp_path)
    with pytest.raises(ExportError, match="tensorrt.*GPU node"):
        export_model(
            _with_export(plan, targets=["onnxruntime", "tensorrt"]), model_dir, dataset_dir, str(tmp_path / "x")
        )
    assert not (tmp_path / "x").exists()


def test_reference_calibration_needs_a_reference(tmp_path: Path) -> None:
    plan, model_dir, dataset_dir = _tiny_artifacts(tmp_path)
    plan = _with_export(plan, quantization=QuantizationSpec(source="reference"))
    with pytest.raises(ExportError, match="monitoring.reference_uri"):
        export_model(plan, model_dir, dataset_dir, str(tmp_path / "export"))


def test_export_onnx_falls_back_to_fixed_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rooivalk.export import onnx_export

    real_export = onnx_export._export_to

    def no_dynamic(model: nn.Module, dummy: torch.Tensor, target: Path, dynamic_batch: bool) -> None:
        if dynamic_batch:
            raise RuntimeError("dynamic shapes unsupported")  # what an exporter limitation looks like
        real_export(model, dummy, target, dynamic_batch)

    monkeypatch.setattr(onnx_export, "_export_to", no_dynamic)
    images, labels = _synthetic(20)
    model = _same_padded_net()
    path = export_onnx(replace_conv2d_same(model, 16), 16, 3, tmp_path / "fixed.onnx")
    session = ort_session(path)
    assert session.get_inputs()[0].shape[0] == 1
    assert verify_onnx(model, path, torch.randn(3, 3, 16, 16)) < 1e-5  # loops one image at a time
    assert 0 <= onnx_accuracy(session, images, labels, 16, MEAN, STD, 3) <= 1
