"""Compression phases on the one engine: QAT after the stages (pruning's tests: tests/unit/models/test_pruning.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rooivalk.models import create_model, fake_quant
from rooivalk.plan import ModelSpec, QATSpec, TrainingSpec
from rooivalk.training.engine.fitting import fit_model
from rooivalk.training.tasks import TensorClassification

SSM = ModelSpec(family="radar_sequence", architecture="ssm", drop_rate=0.1)


def _task() -> TensorClassification:
    rng = np.random.default_rng(0)

    def tracks(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 2, n)
        x = rng.normal(size=(n, 16, 8)).astype(np.float32)
        x[:, :, 6] += np.where(labels == 1, 1.0, -1.0)[:, None]
        return x, labels

    (x, y), (vx, vy) = tracks(128), tracks(64)
    return TensorClassification({"inputs": x}, y, {"inputs": vx}, vy, 2)


def _spec(**extra: object) -> TrainingSpec:
    return TrainingSpec(epochs=2, lr=3e-3, batch_size=32, threads=1, qat=QATSpec(epochs=2, lr=1e-4), **extra)


def test_qat_fine_tunes_after_the_stages_and_leaves_a_plain_model() -> None:
    torch.manual_seed(0)
    model = create_model(SSM, 2)
    keys = list(model.state_dict())
    events: list[dict[str, object]] = []
    fit = fit_model(model, _task(), _spec(), pretrained=False, progress=events.append)
    assert [stage["stage"] for stage in fit.stages] == ["full", "qat"]
    assert [row["epoch"] for row in fit.history] == [1, 2, 3, 4]  # the phase's epochs go on from the stages'
    assert fit.best_epoch in (3, 4)  # the QAT epoch that ships, never a float-only epoch
    assert fit.best_val_accuracy == fit.stages[1]["best_val_accuracy"]
    assert fit.compression == {"qat_layers": float(len(fake_quant.quantized_layers(model)))}
    assert not fake_quant.is_prepared(model)
    assert list(model.state_dict()) == keys  # saved and exported like any model
    assert any("qat: fine-tuning 2 epochs" in str(event.get("text", "")) for event in events)


def test_a_rerun_resumes_the_qat_phase_from_its_checkpoint(tmp_path: Path) -> None:
    uri = str(tmp_path / "ckpt")
    torch.manual_seed(0)
    first = create_model(SSM, 2)
    fit_model(first, _task(), _spec(), pretrained=False, checkpoint_uri=uri)
    assert (tmp_path / "ckpt" / "qat").is_dir()
    torch.manual_seed(1)  # other initial weights: everything must come from the checkpoints
    again = create_model(SSM, 2)
    events: list[dict[str, object]] = []
    fit = fit_model(again, _task(), _spec(), pretrained=False, checkpoint_uri=uri, progress=events.append)
    resumed = [str(event["text"]) for event in events if "resumed from" in str(event.get("text", ""))]
    assert len(resumed) == 2  # the stages' run, then the phase's
    assert "/qat/" in resumed[1]
    assert not [event for event in events if event.get("event") == "batch"]  # nothing trained again
    assert all(torch.equal(value, again.state_dict()[key]) for key, value in first.state_dict().items())
    assert fit.best_epoch in (3, 4)


def test_qat_is_refused_where_the_export_builds_no_static_int8() -> None:
    from rooivalk.plan import PlanError
    from rooivalk.plan.loading import read_plan_file, validate_plan

    raw = read_plan_file("pipelines/plans/sign_language.yaml")
    raw["training"]["qat"] = {"epochs": 1}
    with pytest.raises(PlanError, match=r"training\.qat: the export builds no int8_static variant of 'model'"):
        validate_plan(raw)
    raw["export"]["precisions"].append("int8_static")
    assert validate_plan(raw).training.qat == QATSpec(epochs=1)


def test_an_ema_copy_takes_the_live_activation_ranges_of_qat() -> None:
    from rooivalk.training.engine.ema import ModelEMA

    torch.manual_seed(0)
    model = create_model(SSM, 2)
    fake_quant.prepare(model)
    ema = ModelEMA(model, 0.999)  # built before any range is observed, as the phase's Trainer builds it
    model.train()
    model(torch.randn(8, 16, 8) * 5)
    ema.update(model)
    live = {name: b for name, b in model.named_buffers() if name.endswith("qat_range")}
    copied = {name: b for name, b in ema.module.named_buffers() if name.endswith("qat_range")}
    assert live
    # Averaged from the zeros they started at, the copy's ranges would be 0.1% of the live ones.
    assert all(torch.equal(copied[name], live[name]) for name in live)


def test_a_rerun_does_not_train_a_stage_early_stopping_ended(tmp_path: Path) -> None:
    uri = str(tmp_path / "ckpt")
    stopping = {"enabled": True, "monitor": "val_loss", "mode": "min", "patience": 1, "min_delta": 100.0}
    spec = TrainingSpec(epochs=5, lr=3e-3, batch_size=32, threads=1, early_stopping=stopping)
    torch.manual_seed(0)
    first = fit_model(create_model(SSM, 2), _task(), spec, pretrained=False, checkpoint_uri=uri)
    assert first.stages[0]["epochs"] < 5  # stopped early
    events: list[dict[str, object]] = []
    again = fit_model(create_model(SSM, 2), _task(), spec, pretrained=False, checkpoint_uri=uri, progress=events.append)
    assert not [event for event in events if event.get("event") == "batch"]
    assert again.stages[0]["epochs"] == first.stages[0]["epochs"]


def test_quantization_operators_are_refused_where_no_static_int8_is_built() -> None:
    from rooivalk.plan import PlanError
    from rooivalk.plan.loading import read_plan_file, validate_plan

    raw = read_plan_file("pipelines/plans/sign_language.yaml")
    raw["export"]["quantization"] = {"operators": "weighted"}
    with pytest.raises(PlanError, match="export.quantization.operators: no model builds an int8_static variant"):
        validate_plan(raw)
    raw["export"]["models"]["model"]["precisions"] = ["fp32", "int8_static"]
    assert validate_plan(raw).export.quantization.operators == "weighted"
