import pytest

from rooivalk.models import LayerGroup
from rooivalk.plan import StageLR, StageSpec, TrainingSpec
from rooivalk.training.stages import default_stages, group_learning_rates, resolve_stages

GROUPS = [LayerGroup(name, [f"{name}.w"]) for name in ("stem", "blocks.0", "blocks.1", "blocks.2", "head")]


def test_default_schedule_for_pretrained_is_the_three_stage_reference() -> None:
    stages = resolve_stages(default_stages(True, TrainingSpec()), GROUPS)
    assert [s.name for s in stages] == ["head", "top", "all"]
    assert stages[0].group_lrs == {"head": 1e-3}
    assert stages[1].group_lrs == pytest.approx({"blocks.1": 1e-5, "blocks.2": 1e-4, "head": 1e-3})
    all_lrs = list(stages[2].group_lrs.values())
    assert all_lrs[0] == pytest.approx(1e-7)
    assert all_lrs[-1] == pytest.approx(1e-3)
    ratios = [b / a for a, b in zip(all_lrs, all_lrs[1:], strict=False)]
    assert ratios == pytest.approx([ratios[0]] * len(ratios))  # geometric


def test_from_scratch_is_one_full_stage() -> None:
    (stage,) = resolve_stages(default_stages(False, TrainingSpec(epochs=7, lr=3e-4)), GROUPS)
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
