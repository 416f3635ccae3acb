from pathlib import Path

import pytest
import torch
from torch import nn

from rooivalk.models import create_model, layer_groups, load_trained_model, register_family
from rooivalk.plan import ModelSpec, Plan, StageLR, StageSpec, TrainingSpec
from rooivalk.training import TrainingError, train_model
from rooivalk.training.loop import build_optimizer, freeze_batchnorm_of_frozen, set_trainable
from rooivalk.training.stages import ResolvedStage


class _NanModel(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.mean(dim=(2, 3))) * float("nan")


@register_family("test_nan")
def _nan_family(spec: ModelSpec, num_classes: int) -> nn.Module:
    return _NanModel(num_classes)


def _plan(dataset_dir: str, **training: object) -> Plan:
    return Plan.model_validate(
        {
            "name": "t",
            "data": {"source": dataset_dir, "format": "image_folder"},
            "model": {"architecture": "test_efficientnet", "input_size": 32, "drop_rate": 0.0},
            "training": {"batch_size": 8, "threads": 1, **training},
        }
    )


def test_train_writes_a_loadable_model_that_learns(tiny_dataset_dir: str, tmp_path: Path) -> None:
    plan = _plan(tiny_dataset_dir, epochs=6, lr=3e-3)
    events: list[dict] = []
    logged: list[tuple[dict, int]] = []
    result = train_model(
        plan, tiny_dataset_dir, str(tmp_path / "model"), events.append, lambda m, s: logged.append((m, s))
    )
    assert result.metrics["best_val_accuracy"] > 0.5  # 3 classes: chance is 0.33
    assert [m["val_accuracy"] for m, _ in logged]  # one record per epoch, steps 1..6
    assert [s for _, s in logged] == list(range(1, 7))
    assert {"stage", "epoch", "batch", "epoch_end"} <= {e["event"] for e in events}
    model, info = load_trained_model(str(tmp_path / "model"))
    assert info.classes == ["circle", "square", "stripes"]
    assert info.dataset_version.startswith("ds-")
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    assert result.stages[0]["trainable_share"] == 1.0


def test_head_stage_trains_only_the_head_and_keeps_frozen_batchnorm(tiny_dataset_dir: str, tmp_path: Path) -> None:
    model = create_model(ModelSpec(architecture="test_efficientnet"), 3)
    groups = layer_groups(model)
    trainable = {"head"}
    set_trainable(model, groups, trainable)
    stage = ResolvedStage("head", 1, {"head": 1e-2}, 0.0)
    optimizer = build_optimizer(model, groups, stage, 0.01)
    optimized = {id(p) for g in optimizer.param_groups for p in g["params"]}
    head_params = {id(p) for n, p in model.named_parameters() if n.startswith("classifier")}
    assert optimized == head_params  # frozen groups have no optimizer state
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    freeze_batchnorm_of_frozen(model, groups, trainable)
    loss = model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean()
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    for name, param in model.named_parameters():
        if not name.startswith("classifier"):
            assert param.grad is None, name
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"classifier.weight", "classifier.bias"}  # BN running stats in frozen groups untouched


def test_staged_plan_runs_each_stage(tiny_dataset_dir: str, tmp_path: Path) -> None:
    stages = [
        StageSpec(name="head", epochs=1, train=["head"], lr=StageLR(head=1e-2)),
        StageSpec(name="top", epochs=1, train=["last:1", "head"], lr=StageLR(head=1e-2, backbone=1e-3)),
    ]
    plan = _plan(tiny_dataset_dir).model_copy(update={"training": TrainingSpec(batch_size=8, threads=1, stages=stages)})
    result = train_model(plan, tiny_dataset_dir, str(tmp_path / "model"))
    head, top = result.stages
    assert head["trainable_share"] < top["trainable_share"] < 1.0
    assert result.metrics["stage_head_trainable_params"] == head["trainable_params"]


def test_non_finite_loss_names_stage_epoch_and_step(tiny_dataset_dir: str, tmp_path: Path) -> None:
    plan = _plan(tiny_dataset_dir, epochs=1).model_copy(
        update={"model": ModelSpec(family="test_nan", architecture="nan", input_size=16)}
    )
    with pytest.raises(TrainingError, match=r"stage 'full', epoch 1, step 1"):
        train_model(plan, tiny_dataset_dir, str(tmp_path / "model"))
    assert not (tmp_path / "model" / "model.pt").exists()


def test_class_count_mismatch_is_explained(tiny_dataset_dir: str, tmp_path: Path) -> None:
    plan = _plan(tiny_dataset_dir).model_copy(
        update={"model": ModelSpec(architecture="test_efficientnet", num_classes=5)}
    )
    with pytest.raises(ValueError, match="num_classes is 5 but the dataset has 3 classes"):
        train_model(plan, tiny_dataset_dir, str(tmp_path / "model"))
