import pytest

from rooivalk.models import LayerGroup
from rooivalk.plan import StageLR, StageSpec, TrainingSpec
from rooivalk.training.engine.stages import default_stages, group_learning_rates, resolve_stages

GROUPS = [LayerGroup(name, [f"{name}.w"]) for name in ("stem", "blocks.0", "blocks.1", "blocks.2", "head")]


def test_reference_schedule_by_name_is_the_three_stage_reference() -> None:
    stages = resolve_stages(default_stages(True, TrainingSpec(schedule="reference"), len(GROUPS)), GROUPS)
    assert [s.name for s in stages] == ["head", "top", "all"]
    assert stages[0].group_lrs == {"head": 1e-3}
    assert stages[1].group_lrs == pytest.approx({"blocks.1": 1e-5, "blocks.2": 1e-4, "head": 1e-3})
    all_lrs = list(stages[2].group_lrs.values())
    assert all_lrs[0] == pytest.approx(1e-7)
    assert all_lrs[-1] == pytest.approx(1e-3)
    ratios = [b / a for a, b in zip(all_lrs, all_lrs[1:], strict=False)]
    assert ratios == pytest.approx([ratios[0]] * len(ratios))  # geometric


def test_from_scratch_is_one_full_stage() -> None:
    (stage,) = resolve_stages(default_stages(False, TrainingSpec(epochs=7, lr=3e-4), len(GROUPS)), GROUPS)
    assert stage.epochs == 7
    assert list(stage.group_lrs.values()) == pytest.approx([3e-4] * len(GROUPS))
    assert list(stage.group_lrs) == [g.name for g in GROUPS]


def test_backbone_single_lr_and_missing_rates() -> None:
    assert group_learning_rates(["blocks.2", "head"], StageLR(head=1e-3, backbone=1e-4), "s") == {
        "blocks.2": 1e-4,
        "head": 1e-3,
    }
    with pytest.raises(ValueError, match="gives no 'backbone' LR"):
        group_learning_rates(["blocks.2", "head"], StageLR(head=1e-3), "s")
    with pytest.raises(ValueError, match="gives no 'head' LR"):
        group_learning_rates(["blocks.2", "head"], StageLR(backbone=1e-4), "s")


def test_stage_naming_a_missing_group_lists_groups() -> None:
    spec = StageSpec(name="bad", epochs=1, train=["blocks.7"], lr=StageLR(backbone=1e-4))
    with pytest.raises(ValueError, match=r"training.stages\[bad\].train: unknown layer group 'blocks.7'.*stem"):
        resolve_stages([spec], GROUPS)


@pytest.mark.parametrize("lowest_ratio", [8.0, 0.5])
def test_auto_schedule_is_a_cached_probe_then_all_groups_with_a_derived_ratio(lowest_ratio: float) -> None:
    # 0.5: a reverse spread, the stem at twice the head's LR (input-level shift, docs/training.md).
    training = TrainingSpec.model_validate({"epochs": 4, "auto": {"lowest_ratio": lowest_ratio}})
    head, full = resolve_stages(default_stages(True, training, len(GROUPS)), GROUPS, training)
    assert head.cache_features
    assert head.group_lrs == {"head": training.auto.head_lr}
    assert head.max_samples == training.auto.head_samples
    assert full.epochs == 4
    assert full.seconds is None
    lrs = list(full.group_lrs.values())
    assert list(full.group_lrs) == [g.name for g in GROUPS]
    assert lrs[-1] == pytest.approx(training.auto.top)
    # The earliest group gets top / lowest_ratio whatever the depth: a constant ratio per group.
    assert lrs[0] == pytest.approx(training.auto.top / training.auto.lowest_ratio)
    ratios = [b / a for a, b in zip(lrs, lrs[1:], strict=False)]
    assert ratios == pytest.approx([training.auto.lowest_ratio ** (1 / (len(GROUPS) - 1))] * len(ratios))
    assert (lrs[0] > lrs[-1]) == (lowest_ratio < 1)


def test_auto_schedule_with_a_budget_gives_the_last_stage_the_rest() -> None:
    training = TrainingSpec(budget_seconds=300)
    _, full = resolve_stages(default_stages(True, training, len(GROUPS)), GROUPS, training)
    assert full.epochs is None
    assert full.seconds == "rest"


def test_rest_of_the_budget_needs_a_budget() -> None:
    spec = StageSpec(name="long", seconds="rest", train=["all"], lr=StageLR(spread=(1e-4, 1e-3)))
    with pytest.raises(ValueError, match=r"training.stages\[long\].seconds: 'rest' needs training.budget_seconds"):
        resolve_stages([spec], GROUPS, TrainingSpec())


def test_a_stage_has_epochs_or_seconds() -> None:
    with pytest.raises(ValueError, match="exactly one of 'epochs' and 'seconds'"):
        StageSpec(name="s", train=["head"], lr=StageLR(head=1e-3))
    with pytest.raises(ValueError, match="exactly one of 'epochs' and 'seconds'"):
        StageSpec(name="s", epochs=1, seconds=5.0, train=["head"], lr=StageLR(head=1e-3))


def test_affine_early_rules_out_cached_features() -> None:
    training = TrainingSpec(bn_unfreeze="affine_early")
    with pytest.raises(ValueError, match="affine_early trains BatchNorm of the frozen backbone"):
        resolve_stages(default_stages(True, training, len(GROUPS)), GROUPS, training)
