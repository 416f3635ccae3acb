"""Issue 9's levers: BatchNorm at unfreeze, new-group warmup, budget-sized stages, lr-find."""

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from rooivalk.data.dataset import load_dataset
from rooivalk.models import create_model, layer_groups
from rooivalk.plan import ModelSpec, Plan, StageLR, StageSpec, TrainingSpec
from rooivalk.training import train_model
from rooivalk.training.engine.budget import StepCost, steps_within
from rooivalk.training.engine.loop import Trainer
from rooivalk.training.engine.optim import WARMUP_START_FACTOR
from rooivalk.training.engine.stages import resolve_stages
from rooivalk.training.lr_find import find_lr, steepest_descent_lr
from rooivalk.training.tasks import ImageClassification, TrainData
from rooivalk.training.tasks.image_input import InputSpec

HEAD_STAGE = StageSpec(name="head", epochs=1, train=["head"], lr=StageLR(head=1e-2))
TOP_STAGE = StageSpec(name="top", epochs=2, train=["last:1", "head"], lr=StageLR(head=1e-2, backbone=1e-3))


def _trainer(dataset_dir: str, stages: list[StageSpec], **training: Any) -> Trainer:
    model = create_model(ModelSpec(architecture="test_efficientnet", drop_rate=0.0), 3)
    groups = layer_groups(model)
    dataset = load_dataset(dataset_dir)
    spec = TrainingSpec(stages=stages, **{"batch_size": 8, **training})
    return Trainer(
        model,
        groups,
        resolve_stages(stages, groups, spec),
        ImageClassification(
            TrainData(dataset.subset("train"), dataset.subset("val"), 3),
            InputSpec(32, 3, (0.5,) * 3, (0.5,) * 3, False),
            spec.augment,
            spec.mix,
        ),
        spec,
    )


def _bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


def test_recalibration_re_estimates_batchnorm_once_then_frozen_groups_keep_it(tiny_dataset_dir: str) -> None:
    trainer = _trainer(tiny_dataset_dir, [HEAD_STAGE], bn_unfreeze="recalibrate", bn_recalibration_batches=2)
    pretrained = _bn_buffers(trainer.model)
    trainer.enter_stage(0)
    trainer.recalibrate_batchnorm_once()
    recalibrated = _bn_buffers(trainer.model)
    changed = [k for k in pretrained if not torch.equal(pretrained[k], recalibrated[k])]
    assert {k for k in changed if k.endswith("running_mean")} == {k for k in pretrained if k.endswith("running_mean")}
    assert trainer.position.bn_recalibrated
    trainer.recalibrate_batchnorm_once()  # once per run: a resumed run does not redo it
    trainer.run_epoch(trainer.stages[0])  # frozen groups: BN in eval mode, statistics untouched
    after = _bn_buffers(trainer.model)
    assert all(torch.equal(after[k], recalibrated[k]) for k in recalibrated)


def test_keep_leaves_pretrained_statistics(tiny_dataset_dir: str) -> None:
    trainer = _trainer(tiny_dataset_dir, [HEAD_STAGE], bn_unfreeze="keep")
    before = _bn_buffers(trainer.model)
    trainer.enter_stage(0)
    trainer.recalibrate_batchnorm_once()
    assert all(torch.equal(v, _bn_buffers(trainer.model)[k]) for k, v in before.items())


def test_affine_early_trains_batchnorm_affines_of_frozen_groups_only(tiny_dataset_dir: str) -> None:
    trainer = _trainer(tiny_dataset_dir, [HEAD_STAGE, TOP_STAGE], bn_unfreeze="affine_early")
    model = trainer.model
    trainer.enter_stage(0)
    bn_params = {
        f"{m}.{p}" for m, mod in model.named_modules() if isinstance(mod, nn.BatchNorm2d) for p in ("weight", "bias")
    }
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.run_epoch(trainer.stages[0])
    for name, param in model.named_parameters():
        if name.startswith("classifier") or name in bn_params:
            assert param.grad is not None, name
        else:
            assert param.grad is None, name  # convolutions of frozen groups: no gradient
    changed = {k for k in before if not torch.equal(before[k], model.state_dict()[k])}
    assert not {k for k in changed if "running_" in k}  # statistics stay frozen
    assert changed & bn_params
    # Unfreezing a group whose affines already train: no parameter joins the optimizer twice, and
    # the affines keep their moments.
    assert trainer.optimizer is not None
    moments = {
        id(p): trainer.optimizer.state[p]["exp_avg"].clone()
        for g in trainer.optimizer.param_groups
        for p in g["params"]
    }
    trainer.position.next_stage()
    trainer.enter_stage(1)
    held = [id(p) for g in trainer.optimizer.param_groups for p in g["params"]]
    assert len(held) == len(set(held))
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            if id(p) in moments:
                assert torch.equal(trainer.optimizer.state[p]["exp_avg"], moments[id(p)])


def test_newly_unfrozen_groups_warm_up_while_continuing_groups_do_not(tiny_dataset_dir: str) -> None:
    trainer = _trainer(
        tiny_dataset_dir,
        [HEAD_STAGE, TOP_STAGE],
        scheduler={"warmup_fraction": 0.0, "new_group_warmup_fraction": 0.5},
    )
    trainer.enter_stage(0)
    trainer.run_epoch(trainer.stages[0])
    trainer.position.next_stage()
    trainer.enter_stage(1)
    assert trainer.optimizer is not None
    last = trainer.groups[-2].name
    lrs = {g["group"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs["head"] == pytest.approx(1e-2)  # continuing: straight into its cosine
    assert lrs[last] == pytest.approx(1e-3 * WARMUP_START_FACTOR)  # new: ramps up from 1%
    assert trainer.schedule is not None
    assert trainer.schedule.new_groups == frozenset({last})


def test_steps_within_a_budget_count_validation_per_epoch() -> None:
    cost = StepCost(train_step_seconds=0.1, validation_seconds=1.0)
    # 20 steps (2 s) + 2 validations (2 s) fit in 5 s; 21 steps would need a third validation.
    assert steps_within(5.0, cost, steps_per_epoch=10) == 20
    assert steps_within(100.0, StepCost(0.1, 0.0), 10) == 1000
    assert steps_within(0.5, cost, 10) == 1  # a stage always trains


def test_a_budget_sized_stage_fixes_its_steps_and_a_resume_reuses_them(tiny_dataset_dir: str, tmp_path: Path) -> None:
    stages = [
        StageSpec(name="head", epochs=1, train=["head"], lr=StageLR(head=1e-2), cache_features=True),
        StageSpec(name="all", seconds="rest", train=["all"], lr=StageLR(top=1e-2, ratio=1.5)),
    ]
    trainer = _trainer(tiny_dataset_dir, stages, budget_seconds=3.0)
    trainer.enter_stage(0)
    trainer.fit()
    summary = trainer.position.stage_summaries[1]
    assert summary["steps"] >= 1
    assert trainer.position.elapsed_seconds == 0.0  # only checkpoints record the clock
    state = trainer.state_dict()
    assert state["position"]["elapsed_seconds"] > 0
    resumed = _trainer(tiny_dataset_dir, stages, budget_seconds=3.0)
    resumed.load_state_dict(state)
    assert resumed.position.stage_steps == trainer.position.stage_steps  # not re-measured
    assert resumed.schedule is not None
    assert resumed.schedule.total_steps == trainer.position.stage_steps


def test_a_budget_stage_re_plans_from_measured_epochs_when_the_probe_was_wrong(
    tiny_dataset_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The probe claims 0.3 s per step (a machine busy during its 2 s); real steps take milliseconds.
    monkeypatch.setattr("rooivalk.training.engine.budget_planning.probe_step_cost", lambda *a, **k: StepCost(0.3, 0.01))
    stages = [StageSpec(name="all", seconds="rest", train=["all"], lr=StageLR(top=1e-2, ratio=1.5))]
    trainer = _trainer(tiny_dataset_dir, stages, budget_seconds=2.0, threads=1)
    messages: list[str] = []
    trainer.progress = lambda e: messages.append(e.get("text", "")) if e["event"] == "message" else None
    trainer.enter_stage(0)
    planned = trainer.position.stage_steps
    trainer.fit()
    summary = trainer.position.stage_summaries[0]
    assert planned <= 7  # ~2 s / 0.3 s
    assert summary["steps"] > 2 * planned  # the stage grew to fill the budget
    assert any("re-planned" in m for m in messages)
    assert summary["seconds"] < 2.0 * 1.5  # and did not overrun it
    assert trainer.schedule is not None
    assert trainer.schedule.total_steps == summary["steps"]  # the LR curve follows the new length


def test_a_stage_shorter_than_an_epoch_re_plans_inside_it(
    tiny_dataset_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The probe claims 0.2 s per step, so a 2 s budget plans ~9 steps: less than the first epoch
    # (21 batches of 2), which would end the stage before any epoch-end re-plan.
    monkeypatch.setattr("rooivalk.training.engine.budget_planning.probe_step_cost", lambda *a, **k: StepCost(0.2, 0.01))
    stages = [StageSpec(name="all", seconds="rest", train=["all"], lr=StageLR(top=1e-2, ratio=1.5))]
    trainer = _trainer(tiny_dataset_dir, stages, budget_seconds=2.0, threads=1, batch_size=2)
    messages: list[str] = []
    trainer.progress = lambda e: messages.append(e.get("text", "")) if e["event"] == "message" else None
    trainer.enter_stage(0)
    planned = trainer.position.stage_steps
    assert planned < trainer.batches_per_epoch()
    trainer.fit()
    summary = trainer.position.stage_summaries[0]
    assert any("re-planned" in m and "steps of this epoch" in m for m in messages)
    assert summary["steps"] > 2 * planned
    assert summary["seconds"] < 2.0 * 1.5
    assert trainer.schedule is not None
    assert trainer.schedule.total_steps == summary["steps"]


def test_steps_within_counts_from_the_middle_of_an_epoch() -> None:
    cost = StepCost(train_step_seconds=0.1, validation_seconds=1.0)
    # 4 steps of a 10-step epoch are done: 6 + 10 + 4 steps (2 s) and three validations (3 s) fill 5 s.
    assert steps_within(5.0, cost, steps_per_epoch=10, steps_into_epoch=4) == 20
    assert steps_within(1.3, cost, steps_per_epoch=10, steps_into_epoch=4) == 3  # the epoch under way ends early


def test_auto_schedule_with_a_budget_trains_end_to_end(tiny_dataset_dir: str, tmp_path: Path) -> None:
    weights = tmp_path / "pretrained.pth"
    torch.save(create_model(ModelSpec(architecture="test_efficientnet"), 3).state_dict(), weights)
    plan = Plan.model_validate(
        {
            "name": "t",
            "data": {"source": tiny_dataset_dir, "format": "image_folder"},
            "model": {"architecture": "test_efficientnet", "input_size": 32, "pretrained": str(weights)},
            "training": {"batch_size": 8, "threads": 1, "budget_seconds": 4, "auto": {"head_epochs": 2}},
        }
    )
    assert plan.training.schedule == "auto"  # the default
    events: list[dict[str, Any]] = []
    result = train_model(plan, tiny_dataset_dir, str(tmp_path / "model"), progress=events.append)
    head, full = result.stages
    assert (head["stage"], head["epochs"], full["stage"]) == ("head", 2, "all")
    assert full["steps"] >= 1
    texts = [e["text"] for e in events if e["event"] == "message"]
    assert any("re-estimated" in t and "BatchNorm" in t for t in texts)
    assert any("caching features" in t for t in texts)
    assert any(t.startswith("stage all:") and "of budget ->" in t for t in texts)


def test_lr_find_sweeps_upwards_and_suggests_a_rate_inside_the_sweep(tiny_dataset_dir: str) -> None:
    plan = Plan.model_validate(
        {
            "name": "t",
            "data": {"source": tiny_dataset_dir, "format": "image_folder"},
            "model": {"architecture": "test_efficientnet", "input_size": 32, "drop_rate": 0.0},
            "training": {"batch_size": 8, "threads": 1, "stages": [TOP_STAGE.model_dump()]},
        }
    )
    result = find_lr(plan, tiny_dataset_dir, steps=30, start=1e-6, end=10.0)
    assert result.stage == "top"
    assert all(b > a for a, b in zip(result.lrs, result.lrs[1:], strict=False))
    assert result.lrs[0] == pytest.approx(1e-6)
    assert 1e-6 <= result.suggested_lr <= 10.0
    assert 1e-7 <= result.min_loss_lr <= 1.0
    with pytest.raises(ValueError, match=r"--stage 'nope': the plan's stages are \['top'\]"):
        find_lr(plan, tiny_dataset_dir, stage="nope", steps=30)


def test_steepest_descent_is_where_the_loss_falls_fastest() -> None:
    lrs = [10 ** (-6 + k * 0.1) for k in range(60)]
    # loss flat, then a steep fall centred at 1e-3, then divergence
    losses = [2.0 - 1.5 / (1 + (1e-3 / lr) ** 3) + (5.0 if lr > 0.1 else 0.0) for lr in lrs]
    assert 3e-4 < steepest_descent_lr(lrs, losses) < 3e-3


def test_a_cached_stage_with_max_samples_extracts_and_trains_on_a_fixed_subset(tiny_dataset_dir: str) -> None:
    stage = StageSpec(name="head", epochs=2, train=["head"], lr=StageLR(head=1e-2), cache_features=True, max_samples=16)
    trainer = _trainer(tiny_dataset_dir, [stage])
    trainer.enter_stage(0)
    subset = trainer.stage_subset()
    assert subset is not None
    assert len(subset) == 16
    assert list(subset) == sorted(set(subset))
    assert trainer.batches_per_epoch() == 2  # 16 samples / batch 8
    trainer.run_epoch(trainer.stages[0])
    assert trainer.cached_features(trainer.stages[0]).shape[0] == 16
    again = _trainer(tiny_dataset_dir, [stage])  # the same seed and stage draw the same subset
    again.enter_stage(0)
    assert list(again.stage_subset()) == list(subset)


def test_a_stage_with_its_own_input_size_trains_at_it_and_validates_at_the_models(tiny_dataset_dir: str) -> None:
    small = StageSpec(name="small", epochs=1, train=["all"], lr=StageLR(spread=(1e-3, 1e-3)), input_size=16)
    full = StageSpec(name="all", epochs=1, train=["all"], lr=StageLR(spread=(1e-3, 1e-3)))
    trainer = _trainer(tiny_dataset_dir, [small, full])
    seen: list[tuple[int, ...]] = []
    hook = trainer.model.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    trainer.enter_stage(0)
    trainer.run_epoch(trainer.stages[0])  # training steps at 16 px, then validation at the model's 32 px
    batches = trainer.batches_per_epoch()
    assert seen[:batches] == [(16, 16)] * batches
    assert set(seen[batches:]) == {(32, 32)}
    seen.clear()
    trainer.position.next_stage()
    trainer.enter_stage(1)
    trainer.run_epoch(trainer.stages[1])
    assert set(seen) == {(32, 32)}  # a stage without input_size trains at the model's size
    hook.remove()


def test_a_cached_head_stage_with_its_own_input_size_extracts_train_at_it_and_val_at_the_models(
    tiny_dataset_dir: str,
) -> None:
    stage = StageSpec(name="head", epochs=1, train=["head"], lr=StageLR(head=1e-2), cache_features=True, input_size=16)
    trainer = _trainer(tiny_dataset_dir, [stage])
    trainer.enter_stage(0)
    seen: list[tuple[int, ...]] = []  # extraction calls forward_features, so hook the stem's conv
    stem: nn.Module = trainer.model.conv_stem  # type: ignore[assignment]
    stem.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    trainer.cached_features(trainer.stages[0], "train")
    assert set(seen) == {(16, 16)}
    seen.clear()
    trainer.cached_features(trainer.stages[0], "val")
    assert set(seen) == {(32, 32)}
