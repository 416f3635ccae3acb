"""training.batch_sampling: stratified batches hold the classes in proportion, balanced epochs see every
class equally often; both are pure functions of (seed, epoch), shard like DistributedSampler, and a
run that uses them resumes bit-identical."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rooivalk.models import create_model
from rooivalk.plan import ModelSpec, PlanError, TrainingSpec, validate_plan
from rooivalk.training.engine.distributed import DistContext
from rooivalk.training.engine.fitting import fit_model
from rooivalk.training.engine.sampling import StageSampling, class_order
from rooivalk.training.engine.stages import model_stages
from rooivalk.training.tasks import TensorClassification

LABELS = np.array([0] * 90 + [1] * 10)  # 9:1


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_stratified_batches_hold_the_classes_in_their_proportions() -> None:
    order = class_order(LABELS, "stratified", _generator())
    assert sorted(order.tolist()) == list(range(100))  # every sample once
    for start in range(0, 100, 10):
        assert (LABELS[order[start : start + 10].numpy()] == 1).sum() == 1  # each batch of 10: one of class 1
    assert torch.equal(order, class_order(LABELS, "stratified", _generator()))
    assert not torch.equal(order, class_order(LABELS, "stratified", _generator(1)))


def test_balanced_epochs_see_each_class_about_equally_often() -> None:
    order = class_order(LABELS, "balanced", _generator())
    assert len(order) == 100  # an epoch keeps its number of samples
    share = float((LABELS[order.numpy()] == 1).mean())
    assert 0.35 < share < 0.65  # 0.10 in the data
    assert torch.equal(order, class_order(LABELS, "balanced", _generator()))


def _sampling(mode: str, rank: int = 0, world: int = 1) -> StageSampling:
    spec = TrainingSpec(batch_sampling=mode, batch_size=10)
    stages = model_stages(spec, False, [])
    return StageSampling(LABELS, stages, spec, DistContext(rank=rank, world_size=world))


def test_ranks_share_one_global_order_and_split_it() -> None:
    single = _sampling("stratified").epoch_order(0, 3)
    first, second = _sampling("stratified", 0, 2).epoch_order(0, 3), _sampling("stratified", 1, 2).epoch_order(0, 3)
    assert first.tolist() == single[0::2].tolist()
    assert second.tolist() == single[1::2].tolist()


def test_an_unknown_sampling_is_refused_naming_the_key(tmp_path: Path) -> None:
    plan = {
        "name": "sampling",
        "data": {"source": str(tmp_path), "format": "image_folder"},
        "model": {"architecture": "resnet18"},
        "training": {"batch_sampling": "oversample"},
    }
    with pytest.raises(PlanError, match="training.batch_sampling"):
        validate_plan(plan)


def _fit(spec: TrainingSpec, **kwargs: Any) -> tuple[torch.nn.Module, Any]:
    rng = np.random.default_rng(0)
    labels = (rng.random(96) < 0.2).astype(np.int64)  # an imbalanced two-class set
    tracks = rng.normal(size=(96, 16, 8)).astype(np.float32)
    tracks[:, :, 6] += np.where(labels == 1, 1.0, -1.0)[:, None]
    task = TensorClassification({"inputs": tracks}, labels, {"inputs": tracks[:32]}, labels[:32], 2)
    torch.manual_seed(0)
    model = create_model(ModelSpec(family="radar_sequence", architecture="gru", drop_rate=0.1), 2)
    return model, fit_model(model, task, spec, False, **kwargs)


class _Killed(Exception):
    pass


def test_a_balanced_run_killed_mid_epoch_resumes_bit_identical(tmp_path: Path) -> None:
    spec = TrainingSpec(
        epochs=2, lr=3e-3, batch_size=16, threads=1, deterministic=True, batch_sampling="balanced",
        checkpoint={"every_steps": 1, "keep_last": 2},
    )  # fmt: skip
    whole, _ = _fit(spec, checkpoint_uri=str(tmp_path / "whole"))
    steps = {"n": 0}

    def kill_after_four(event: dict[str, Any]) -> None:
        if event.get("event") == "batch":
            steps["n"] += 1
            if steps["n"] == 4:
                raise _Killed

    with pytest.raises(_Killed):
        _fit(spec, checkpoint_uri=str(tmp_path / "cut"), progress=kill_after_four)
    resumed, fit = _fit(spec, checkpoint_uri=str(tmp_path / "cut"))
    assert fit.resumed_from is not None
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in whole.state_dict().items())
