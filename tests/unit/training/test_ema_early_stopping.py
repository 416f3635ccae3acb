"""ModelEMA and EarlyStopping: averaging between init and current, state round-trips, stop rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from rooivalk.plan import EarlyStoppingSpec
from rooivalk.training.engine.early_stopping import EarlyStopping
from rooivalk.training.engine.ema import ModelEMA


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def test_ema_lies_between_init_and_current_weights() -> None:
    model = _model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    ema = ModelEMA(model, decay=0.9)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    model(torch.randn(8, 4))  # train mode: BatchNorm running stats move
    for _ in range(3):
        ema.update(model)
    current, averaged = model.state_dict(), ema.module.state_dict()
    # Three updates toward weights 1 above init: init + (1 - 0.9^3).
    assert torch.allclose(averaged["0.weight"], initial["0.weight"] + (1 - 0.9**3))
    for key in ("0.weight", "0.bias", "1.weight", "1.running_mean"):
        low, high = torch.minimum(initial[key], current[key]), torch.maximum(initial[key], current[key])
        assert bool(((averaged[key] >= low - 1e-6) & (averaged[key] <= high + 1e-6)).all()), key
        assert not torch.equal(averaged[key], current[key]), key
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_state_round_trips(tmp_path: Path) -> None:
    model = _model()
    ema = ModelEMA(model, decay=0.5)
    with torch.no_grad():
        model[0].weight.mul_(3)
    ema.update(model)
    torch.save(ema.state_dict(), tmp_path / "ema.pt")
    restored = ModelEMA(_model(), decay=0.5)
    restored.load_state_dict(torch.load(tmp_path / "ema.pt", weights_only=True))
    for key, value in ema.module.state_dict().items():
        assert torch.equal(restored.module.state_dict()[key], value)
    model_copy = _model()
    model_copy.load_state_dict(ema.module.state_dict())  # the EMA module saves like the model


def test_early_stopping_max_mode_patience() -> None:
    stopper = EarlyStopping(EarlyStoppingSpec(enabled=True, patience=2))
    decisions = [stopper.update({"val_accuracy": v, "val_loss": 1.0}) for v in (0.5, 0.6, 0.55, 0.7, 0.7, 0.65)]
    assert decisions == [False, False, False, False, False, True]
    assert (stopper.best_value, stopper.best_epoch, stopper.improved) == (0.7, 3, False)


def test_early_stopping_min_mode_and_min_delta() -> None:
    spec = EarlyStoppingSpec(enabled=True, monitor="val_loss", mode="min", patience=2, min_delta=0.1)
    stopper = EarlyStopping(spec)
    assert not stopper.update({"val_loss": 1.0})
    assert stopper.improved
    assert not stopper.update({"val_loss": 0.95})
    assert not stopper.improved
    assert not stopper.update({"val_loss": 0.8})
    assert stopper.improved
    assert not stopper.update({"val_loss": float("nan")})
    assert not stopper.improved
    assert stopper.update({"val_loss": 0.75})
    assert (stopper.best_value, stopper.best_epoch) == (0.8, 2)


def test_disabled_tracks_best_but_never_stops() -> None:
    stopper = EarlyStopping(EarlyStoppingSpec(enabled=False, patience=1))
    assert not any(stopper.update({"val_accuracy": v}, epoch=10 + i) for i, v in enumerate((0.9, 0.1, 0.1, 0.1)))
    assert (stopper.best_value, stopper.best_epoch) == (0.9, 10)


def test_missing_metric_names_monitor_and_available() -> None:
    stopper = EarlyStopping(EarlyStoppingSpec(monitor="val_f1"))
    with pytest.raises(KeyError, match=r"'val_f1'.*\['val_accuracy', 'val_loss'\]"):
        stopper.update({"val_loss": 1.0, "val_accuracy": 0.5})


def test_early_stopping_state_survives_weights_only_load(tmp_path: Path) -> None:
    spec = EarlyStoppingSpec(enabled=True, patience=2)
    stopper = EarlyStopping(spec)
    for value in (0.5, 0.4):
        stopper.update({"val_accuracy": value})
    torch.save({"early_stopping": stopper.state_dict()}, tmp_path / "state.pt")
    resumed = EarlyStopping(spec)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True)["early_stopping"])
    assert resumed.state_dict() == stopper.state_dict()
    assert resumed.update({"val_accuracy": 0.45})  # the second bad epoch in a row
