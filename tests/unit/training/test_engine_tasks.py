"""The one engine on tensor and fusion tasks: what image models had, sensor and fusion models get too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rooivalk.models import create_model
from rooivalk.models.fusion_transformer import FusionTransformer
from rooivalk.plan import ModelSpec, StageLR, StageSpec, TrainingSpec
from rooivalk.training.engine.budget import StepCost
from rooivalk.training.engine.checkpoint import CheckpointError
from rooivalk.training.engine.fitting import FitResult, fit_model
from rooivalk.training.tasks import FusionClassification, TensorClassification

GRU = ModelSpec(family="radar_sequence", architecture="gru", drop_rate=0.1)


def _tracks(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Radar-like tracks whose class is the sign of the mean of feature 6 (micro-Doppler)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    tracks = rng.normal(size=(n, 32, 8)).astype(np.float32)
    tracks[:, :, 6] += np.where(labels == 1, 1.0, -1.0)[:, None]
    return tracks, labels


def _task(n: int = 128) -> TensorClassification:
    x, y = _tracks(n, 0)
    vx, vy = _tracks(64, 1)
    return TensorClassification({"inputs": x}, y, {"inputs": vx}, vy, 2)


def _fit(
    spec: TrainingSpec, model_spec: ModelSpec = GRU, pretrained: bool = False, **kwargs: Any
) -> tuple[Any, FitResult]:
    torch.manual_seed(0)
    model = create_model(model_spec, 2)
    return model, fit_model(model, _task(), spec, pretrained, **kwargs)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> list[str]:
    sb = b.state_dict()
    return [k for k, v in a.state_dict().items() if not torch.equal(v, sb[k])]


def test_a_tensor_model_learns_and_is_left_at_its_best_epoch() -> None:
    spec = TrainingSpec(
        epochs=4, lr=3e-3, batch_size=32, threads=1, scheduler={"name": "cosine", "warmup_fraction": 0.1}
    )
    model, fit = _fit(spec)
    assert fit.best_val_accuracy > 0.9
    assert [row["epoch"] for row in fit.history] == [1, 2, 3, 4]  # per-epoch metrics, as MLflow gets them
    assert fit.stages[0]["stage"] == "full"
    _, vy = _tracks(64, 1)
    logits = _task().predict(model, {"inputs": _tracks(64, 1)[0]}, 64, torch.device("cpu"))
    assert (logits.argmax(1).numpy() == vy).mean() == fit.best_val_accuracy


def test_a_frozen_stage_and_a_cached_head_stage_leave_the_encoder_untouched() -> None:
    for cache in (False, True):
        torch.manual_seed(0)
        model = create_model(ModelSpec(family="radar_sequence", architecture="ssm"), 2)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        stage = StageSpec(name="head", epochs=2, train=["head"], lr=StageLR(head=1e-2), cache_features=cache)
        spec = TrainingSpec(batch_size=32, threads=1, stages=[stage], bn_unfreeze="keep")
        fit = fit_model(model, _task(64), spec, pretrained=True)
        changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
        assert changed
        assert all(k.startswith("head.") for k in changed), changed  # BN statistics included
        assert fit.stages[0]["groups"] == {"head": 1e-2}
    # bn_unfreeze: recalibrate (the default) re-estimates the frozen encoder's BatchNorm statistics first.
    torch.manual_seed(0)
    model = create_model(ModelSpec(family="radar_sequence", architecture="ssm"), 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit_model(model, _task(64), TrainingSpec(batch_size=32, threads=1, stages=[stage]), pretrained=True)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert {k for k in changed if not k.startswith("head.")} == {
        "input.0.running_mean", "input.0.running_var", "input.0.num_batches_tracked"
    }  # fmt: skip


def test_ema_bf16_and_early_stopping_change_what_a_tensor_run_does() -> None:
    base = {"epochs": 6, "lr": 3e-3, "batch_size": 32, "threads": 1}
    plain_model, plain = _fit(TrainingSpec(**base))
    ema_model, _ = _fit(TrainingSpec(**base, ema={"enabled": True, "decay": 0.9}))
    bf16_model, bf16 = _fit(TrainingSpec(**base, precision="bf16"))
    assert _same(plain_model, ema_model)
    assert _same(plain_model, bf16_model)
    assert [r["train_loss"] for r in bf16.history] != [r["train_loss"] for r in plain.history]
    assert all(t.dtype == torch.float32 for t in bf16_model.state_dict().values() if t.is_floating_point())
    # A learning rate too small to move anything: validation never improves, patience 2 stops it.
    stopped_model, stopped = _fit(
        TrainingSpec(
            **{**base, "lr": 1e-12},
            early_stopping={"enabled": True, "patience": 2, "monitor": "val_loss", "mode": "min", "min_delta": 0.01},
        )
    )
    assert stopped.stages[0]["epochs"] == 3.0  # not 6


def test_a_fusion_task_trains_through_the_engine_with_modality_dropout() -> None:
    rng = np.random.default_rng(0)
    n = 192
    labels = rng.integers(0, 3, n)
    arrays = {
        "rf": (rng.normal(size=(n, 8)) + 2.0 * labels[:, None]).astype(np.float32),
        "radar": rng.normal(size=(n, 4)).astype(np.float32),
        "present": np.ones((n, 2), dtype=bool),
    }
    task = FusionClassification(["rf", "radar"], arrays, labels, arrays, labels, 3)
    torch.manual_seed(0)
    model = FusionTransformer({"rf": 8, "radar": 4}, 3, 16, 1, 2, 0.0, 0.2, 1)
    fit = fit_model(model, task, TrainingSpec(epochs=12, lr=1e-2, batch_size=32, threads=1), pretrained=False)
    assert fit.best_val_accuracy > 0.45  # 3 classes: chance is 0.33 (a hand-written AdamW loop reaches 0.50-0.53)
    assert fit.history[-1]["train_loss"] < fit.history[0]["train_loss"]
    assert len(fit.history) == 12


class _Killed(RuntimeError):
    pass


def _kill_after(batches: int) -> Any:
    seen = {"n": 0}

    def progress(event: dict[str, Any]) -> None:
        if event["event"] == "batch":
            seen["n"] += 1
            if seen["n"] == batches:
                raise _Killed  # the process dies here: nothing after the last checkpoint survives

    return progress


def test_a_killed_tensor_run_resumes_bit_identical(tmp_path: Path) -> None:
    spec = TrainingSpec(
        epochs=3, lr=3e-3, batch_size=32, threads=1, deterministic=True, seed=5,
        ema={"enabled": True, "decay": 0.9}, checkpoint={"every_steps": 1, "keep_last": 2},
    )  # fmt: skip
    whole, full = _fit(spec, checkpoint_uri=str(tmp_path / "whole"))
    with pytest.raises(_Killed):
        _fit(spec, checkpoint_uri=str(tmp_path / "cut"), progress=_kill_after(6))  # mid-epoch 2 (4 steps/epoch)
    resumed, again = _fit(spec, checkpoint_uri=str(tmp_path / "cut"))
    assert again.resumed_from is not None
    assert "ckpt-000000005.pt" in again.resumed_from
    assert _same(whole, resumed) == []
    assert (again.best_val_accuracy, again.best_epoch) == (full.best_val_accuracy, full.best_epoch)


def test_deterministic_keeps_a_budget_stage_step_plan_across_a_kill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The probe's timing is what differs between runs; a fixed reading makes the uninterrupted run's plan
    # the one the killed run made, so the comparison isolates what resuming does with it.
    monkeypatch.setattr(
        "rooivalk.training.engine.budget_planning.probe_step_cost", lambda *a, **k: StepCost(0.05, 0.01)
    )
    stage = StageSpec(name="all", seconds=1.0, train=["all"], lr=StageLR(spread=(3e-3, 3e-3)))
    spec = TrainingSpec(
        batch_size=32, threads=1, deterministic=True, stages=[stage], checkpoint={"every_steps": 3, "keep_last": 10}
    )
    whole, full = _fit(spec, checkpoint_uri=str(tmp_path / "whole"))
    manifest = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    assert (
        full.stages[0]["steps"] == 18
    )  # (1 s - 5 validations) / 50 ms, rounded down, never re-planned from real step times
    with pytest.raises(_Killed):
        _fit(spec, checkpoint_uri=str(tmp_path / "cut"), progress=_kill_after(7))
    first = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    monkeypatch.setattr("rooivalk.training.engine.budget_planning.probe_step_cost", lambda *a, **k: StepCost(0.5, 0.01))
    resumed, again = _fit(spec, checkpoint_uri=str(tmp_path / "cut"))  # a slower probe would plan 1 step: unused
    assert again.stages[0]["steps"] == full.stages[0]["steps"]
    assert _same(whole, resumed) == []
    assert manifest
    assert (first[0]["reason"], first[0]["global_step"]) == ("plan", 0)  # the plan was saved before any step


def test_a_checkpoint_of_another_model_is_refused_naming_tensors(tmp_path: Path) -> None:
    spec = TrainingSpec(epochs=1, lr=1e-3, batch_size=32, threads=1)
    _fit(spec, checkpoint_uri=str(tmp_path / "ckpt"))
    other = ModelSpec(family="radar_sequence", architecture="ssm")
    with pytest.raises(CheckpointError, match=r"cannot resume from .*ckpt.*(removed|added|->)"):
        _fit(spec, other, checkpoint_uri=str(tmp_path / "ckpt"))


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one_and_says_so(tmp_path: Path) -> None:
    spec = TrainingSpec(epochs=2, lr=1e-3, batch_size=32, threads=1, checkpoint={"every_steps": 1, "keep_last": 3})
    with pytest.raises(_Killed):
        _fit(spec, checkpoint_uri=str(tmp_path / "ckpt"), progress=_kill_after(5))
    newest = json.loads((tmp_path / "ckpt" / "manifest.json").read_text())[-1]["file"]
    path = tmp_path / "ckpt" / newest
    path.write_bytes(path.read_bytes()[:100])  # truncated
    events: list[dict[str, Any]] = []
    _, fit = _fit(spec, checkpoint_uri=str(tmp_path / "ckpt"), progress=events.append)
    texts = [e["text"] for e in events if e["event"] == "message"]
    assert any(newest in t and "skipped" in t for t in texts), texts
    assert fit.resumed_from is not None
    assert newest not in fit.resumed_from


def test_image_only_stage_options_are_refused_for_tensor_tasks() -> None:
    stage = StageSpec(name="small", epochs=1, input_size=16, train=["all"], lr=StageLR(spread=(1e-3, 1e-3)))
    with pytest.raises(ValueError, match=r"stages\[small\].input_size: the tensor task"):
        _fit(TrainingSpec(batch_size=32, stages=[stage]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_tensor_model_trains_on_the_gpu() -> None:
    seen: list[torch.device] = []
    torch.manual_seed(0)
    model = create_model(GRU, 2)
    original = model.forward

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        seen.append(inputs.device)
        return original(inputs)

    model.forward = forward  # type: ignore[method-assign]
    fit_model(model, _task(), TrainingSpec(epochs=1, lr=1e-3, batch_size=32, precision="bf16"), pretrained=False)
    assert seen
    assert all(d.type == "cuda" for d in seen)
    assert next(model.parameters()).device.type == "cpu"  # handed back on the CPU


def test_every_model_the_engine_fits_honours_training_threads() -> None:
    # fit_model sets the threads itself, so a fusion or sensor section's `threads` is not left to callers.
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _fit(TrainingSpec(epochs=1, lr=3e-3, batch_size=32, threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
