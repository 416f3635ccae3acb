"""Optimizers and per-stage LR schedules (rooivalk.training.engine.optim) on a two-parameter model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rooivalk.plan import OptimizerSpec, SchedulerSpec
from rooivalk.training.engine.optim import WARMUP_START_FACTOR, StageSchedule, build_optimizer, can_fuse


def _params(n: int = 2) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(2)) for _ in range(n)]


def _run(schedule: StageSchedule, optimizer: torch.optim.Optimizer, steps: int) -> list[list[float]]:
    """LRs of every group at each step, the initial one included: (steps + 1) x groups."""
    lrs = [schedule.lrs]
    for _ in range(steps):
        optimizer.step()
        schedule.step_batch()
        lrs.append(schedule.lrs)
    return lrs


@pytest.mark.parametrize(
    ("name", "kind"), [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)]
)
def test_build_optimizer_keeps_group_keys_and_decay(name: str, kind: type[torch.optim.Optimizer]) -> None:
    a, b = _params()
    groups = [{"params": [a], "lr": 0.1, "group": "head"}, {"params": [b], "lr": 0.01, "weight_decay": 0.0}]
    optimizer = build_optimizer(OptimizerSpec(name=name, weight_decay=0.05, nesterov=True), groups)
    assert isinstance(optimizer, kind)
    first, second = optimizer.param_groups
    assert (first["lr"], first["weight_decay"], first["group"]) == (0.1, 0.05, "head")
    assert (second["lr"], second["weight_decay"]) == (0.01, 0.0)
    if name == "sgd":
        assert first["nesterov"]
        assert first["momentum"] == 0.9


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_fused_update_takes_the_same_steps_as_foreach(name: str) -> None:
    # Two copies of one start, per-group LRs and weight decay: the fused kernel must read them as
    # the foreach path does (the plan's default is fused on CPU).
    torch.manual_seed(0)
    start = [torch.randn(64), torch.randn(8, 8)]
    runs = {}
    for fused in (True, False):
        a, b = (torch.nn.Parameter(t.clone()) for t in start)
        groups = [{"params": [a], "lr": 0.05, "group": "head"}, {"params": [b], "lr": 0.01, "weight_decay": 0.0}]
        optimizer = build_optimizer(OptimizerSpec(name=name, fused=fused), groups)
        assert bool(optimizer.defaults.get("fused")) is fused
        for step in range(5):
            torch.manual_seed(step)
            for param in (a, b):
                param.grad = torch.randn_like(param)
            optimizer.step()
        runs[fused] = [a.detach(), b.detach()]
    for fused_param, foreach_param in zip(runs[True], runs[False], strict=True):
        torch.testing.assert_close(fused_param, foreach_param)


def test_fusing_needs_float_parameters_on_cpu_or_cuda() -> None:
    assert can_fuse([{"params": _params()}])
    assert not can_fuse([{"params": [torch.nn.Parameter(torch.zeros(2, device="meta"))]}])
    assert not can_fuse([{"params": [torch.zeros(2, dtype=torch.int64)]}])


def test_build_optimizer_needs_lr_per_group() -> None:
    with pytest.raises(ValueError, match="no 'lr'"):
        build_optimizer(OptimizerSpec(), [{"params": _params(1)}])


def test_cosine_warms_up_then_decays_to_min_ratio_per_group() -> None:
    a, b = _params()
    optimizer = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01}])
    spec = SchedulerSpec(name="cosine", warmup_epochs=1, min_lr_ratio=0.1)
    schedule = StageSchedule(spec, optimizer, steps_per_epoch=4, epochs=3)
    lrs = _run(schedule, optimizer, 12)
    assert lrs[0] == pytest.approx([0.1 * WARMUP_START_FACTOR, 0.01 * WARMUP_START_FACTOR])
    assert lrs[4] == pytest.approx([0.1, 0.01])  # warmup over at step 4
    assert all(x[0] > y[0] for x, y in zip(lrs[4:11], lrs[5:12], strict=True))  # strictly decaying
    assert lrs[12] == pytest.approx([0.01, 0.001])  # min_lr_ratio x each group's base LR
    assert schedule.steps == 12


def test_stage_warmup_overrides_fraction_and_no_warmup_starts_at_base() -> None:
    optimizer = torch.optim.SGD(_params(1), lr=0.1)
    schedule = StageSchedule(SchedulerSpec(warmup_fraction=0.5), optimizer, 10, 1, warmup_epochs=0)
    assert schedule.warmup_steps == 0
    assert schedule.lrs == pytest.approx([0.1])


def test_next_stage_schedules_groups_added_later_with_fresh_initial_lr() -> None:
    """The bug torch's setdefault("initial_lr") causes: stage 2 must not reuse stage 1's base LRs."""
    a, b = _params()
    optimizer = torch.optim.AdamW([{"params": [a], "lr": 1e-3}])
    spec = SchedulerSpec(name="cosine", warmup_epochs=1)
    _run(StageSchedule(spec, optimizer, steps_per_epoch=2, epochs=2), optimizer, 4)
    # Stage 2: a new LR for the old group, a newly unfrozen group.
    optimizer.param_groups[0]["lr"] = 5e-4
    optimizer.add_param_group({"params": [b], "lr": 1e-4})
    schedule = StageSchedule(spec, optimizer, steps_per_epoch=2, epochs=3)
    assert [g["initial_lr"] for g in optimizer.param_groups] == [5e-4, 1e-4]
    lrs = _run(schedule, optimizer, 6)
    assert lrs[0] == pytest.approx([5e-4 * WARMUP_START_FACTOR, 1e-4 * WARMUP_START_FACTOR])
    assert lrs[2] == pytest.approx([5e-4, 1e-4])
    half = 0.5 * (1 + math.cos(math.pi * 2 / 4))
    assert lrs[4] == pytest.approx([5e-4 * half, 1e-4 * half])
    assert lrs[6] == pytest.approx([0.0, 0.0], abs=1e-12)


def test_onecycle_peaks_at_group_lrs_and_stops_at_the_end() -> None:
    a, b = _params()
    optimizer = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.02}])
    schedule = StageSchedule(SchedulerSpec(name="onecycle", pct_start=0.3), optimizer, 5, 2)
    lrs = _run(schedule, optimizer, 12)  # two steps past the stage: no OneCycleLR error
    peak = max(range(len(lrs)), key=lambda i: lrs[i][0])
    assert lrs[peak] == pytest.approx([0.1, 0.02])
    assert lrs[-1][0] < 1e-4
    assert lrs[-1] == lrs[9]


def test_plateau_reduces_on_stalled_metric_and_needs_it() -> None:
    optimizer = torch.optim.SGD(_params(1), lr=0.1)
    schedule = StageSchedule(SchedulerSpec(name="plateau", patience=1, factor=0.5), optimizer, 3, 5)
    _run(schedule, optimizer, 3)
    assert schedule.lrs == [0.1]  # not stepped per batch
    for accuracy in (0.5, 0.5, 0.5):
        schedule.step_epoch(accuracy)
    assert schedule.lrs == pytest.approx([0.05])
    with pytest.raises(ValueError, match="metric"):
        schedule.step_epoch(None)


def test_cosine_restarts_and_constant() -> None:
    optimizer = torch.optim.SGD(_params(1), lr=0.1)
    lrs = _run(StageSchedule(SchedulerSpec(name="cosine_restarts", restart_epochs=1), optimizer, 4, 2), optimizer, 8)
    assert lrs[4] == pytest.approx([0.1])
    assert lrs[2][0] < 0.1
    optimizer = torch.optim.SGD(_params(1), lr=0.1)
    constant = StageSchedule(SchedulerSpec(name="constant"), optimizer, 4, 2)
    assert _run(constant, optimizer, 8)[-1] == [0.1]
    constant.step_epoch(None)


def test_state_dict_resumes_mid_stage(tmp_path: Path) -> None:
    spec = SchedulerSpec(name="cosine", warmup_epochs=1, min_lr_ratio=0.2)
    optimizer = torch.optim.SGD(_params(1), lr=0.1)
    schedule = StageSchedule(spec, optimizer, 3, 3)
    _run(schedule, optimizer, 4)
    torch.save((optimizer.state_dict(), schedule.state_dict()), tmp_path / "state.pt")
    saved = torch.load(tmp_path / "state.pt", weights_only=True)
    expected = _run(schedule, optimizer, 5)
    resumed_optimizer = torch.optim.SGD(_params(1), lr=0.1)
    resumed = StageSchedule(spec, resumed_optimizer, 3, 3)
    resumed_optimizer.load_state_dict(saved[0])
    resumed.load_state_dict(saved[1])
    assert [lr for lrs in _run(resumed, resumed_optimizer, 5) for lr in lrs] == pytest.approx(sum(expected, []))
    with pytest.raises(ValueError, match="schedule"):
        StageSchedule(SchedulerSpec(name="constant"), resumed_optimizer, 3, 3).load_state_dict(saved[1])


def test_retarget_walks_the_rest_of_the_cosine_at_a_new_pace_without_a_jump() -> None:
    (a,) = _params(1)
    optimizer = torch.optim.SGD([{"params": [a], "lr": 0.1}])
    spec = SchedulerSpec(name="cosine", warmup_fraction=0.0, min_lr_ratio=0.0)
    schedule = StageSchedule(spec, optimizer, steps_per_epoch=10, epochs=1)
    _run(schedule, optimizer, 5)  # halfway down a 10-step cosine
    assert schedule.lrs[0] == pytest.approx(0.05)
    assert schedule.retarget(20)  # the budget turned out to allow 20 steps: 15 left for the other half
    saved = schedule.state_dict()
    lrs = _run(schedule, optimizer, 15)
    assert lrs[0][0] == pytest.approx(0.05)  # no jump at the re-plan (a 20-step cosine would be at 0.079)
    assert lrs[1][0] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * (5 + 5 / 15) / 10)))  # 1/3 step per step
    assert all(later <= earlier for (earlier,), (later,) in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1][0] == pytest.approx(0.0, abs=1e-12)  # ends at the new length
    # A resume rebuilds the stage at its re-planned length and loads the saved pace: the same LRs.
    (b,) = _params(1)
    resumed_optimizer = torch.optim.SGD([{"params": [b], "lr": 0.1}])
    resumed = StageSchedule(spec, resumed_optimizer, steps_per_epoch=10, epochs=1, total_steps=20)
    resumed.load_state_dict(saved)
    assert [lr for (lr,) in _run(resumed, resumed_optimizer, 15)][1:] == pytest.approx([lr for (lr,) in lrs][1:])
    # Shrinking works the same way: 5 steps left walk the remaining half in 5.
    (c,) = _params(1)
    shrink_optimizer = torch.optim.SGD([{"params": [c], "lr": 0.1}])
    shrinking = StageSchedule(SchedulerSpec(name="slanted_triangular"), shrink_optimizer, steps_per_epoch=20, epochs=1)
    before = _run(shrinking, shrink_optimizer, 10)[-1][0]
    assert shrinking.retarget(15)
    after = _run(shrinking, shrink_optimizer, 5)
    assert after[0][0] == pytest.approx(before)
    assert after[-1][0] == pytest.approx(0.1 / SchedulerSpec(name="slanted_triangular").stlr_ratio)  # STLR's floor
    onecycle = StageSchedule(SchedulerSpec(name="onecycle"), optimizer, steps_per_epoch=10, epochs=1)
    assert not onecycle.retarget(20)  # OneCycleLR's length is fixed at construction
    assert onecycle.total_steps == 10
