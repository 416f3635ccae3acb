"""Stage-by-stage training of tensor models: it learns, stages freeze, warmup+cosine from scratch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rooivalk.models import create_model
from rooivalk.plan import ModelSpec
from rooivalk.plan_training import StageLR, StageSpec, TrainingSpec
from rooivalk.training.tensor_fit import fit_tensor_model


def _tracks(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Radar-like tracks whose class is the sign of the mean of feature 6 (micro-Doppler)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    tracks = rng.normal(size=(n, 32, 8)).astype(np.float32)
    tracks[:, :, 6] += np.where(labels == 1, 1.0, -1.0)[:, None]
    return tracks, labels


def test_learns_a_separable_task_from_scratch_and_keeps_the_best_epoch():
    torch.manual_seed(0)
    model = create_model(ModelSpec(family="radar_sequence", architecture="gru", drop_rate=0.0), 2)
    x, y = _tracks(256, 0)
    vx, vy = _tracks(128, 1)
    training = TrainingSpec(epochs=4, lr=3e-3, batch_size=32, scheduler={"name": "cosine", "warmup_fraction": 0.1})
    fit = fit_tensor_model(model, {"inputs": x}, y, {"inputs": vx}, vy, training)
    assert fit.best_val_accuracy > 0.9
    assert len(fit.history) == 4
    assert fit.stages[0]["name"] == "full"
    with torch.no_grad():
        model.eval()
        accuracy = (model(torch.from_numpy(vx)).argmax(1).numpy() == vy).mean()
    assert accuracy == fit.best_val_accuracy  # the model is left at its best validation epoch


def test_a_frozen_stage_leaves_the_encoder_untouched():
    torch.manual_seed(0)
    model = create_model(ModelSpec(family="radar_sequence", architecture="ssm"), 2)
    x, y = _tracks(64, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    training = TrainingSpec(
        batch_size=32,
        stages=[StageSpec(name="head", epochs=2, train=["head"], lr=StageLR(head=1e-2))],
    )
    fit = fit_tensor_model(model, {"inputs": x}, y, {"inputs": x}, y, training, pretrained=True)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed
    assert all(k.startswith("head.") for k in changed), changed  # BatchNorm statistics included
    assert fit.stages[0]["groups"] == ["head"]


def test_stage_options_for_images_are_refused_naming_the_stage():
    model = create_model(ModelSpec(family="radar_sequence", architecture="gru"), 2)
    x, y = _tracks(16, 0)
    for stage, message in (
        (StageSpec(name="s", seconds=5, train=["all"], lr=StageLR(spread=(1e-3, 1e-3))), "sized in epochs"),
        (
            StageSpec(name="small", epochs=1, input_size=16, train=["all"], lr=StageLR(spread=(1e-3, 1e-3))),
            r"stages \['small'\] set input_size",
        ),
    ):
        with pytest.raises(ValueError, match=message):
            fit_tensor_model(model, {"inputs": x}, y, {"inputs": x}, y, TrainingSpec(stages=[stage]), name="radar")
