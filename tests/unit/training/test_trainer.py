from pathlib import Path

import pytest
import torch
from torch import nn

from rooivalk.models import create_model, layer_groups, load_trained_model, register_family
from rooivalk.plan import ModelSpec, Plan, StageLR, StageSpec, TrainingSpec
from rooivalk.training import TrainingError, train_model
from rooivalk.training.engine.loop import Trainer
from rooivalk.training.engine.stages import resolve_stages
from rooivalk.training.tasks import ImageClassification, TrainData
from rooivalk.training.tasks.image_input import InputSpec


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
    assert [s for _, s in logged] == list(range(1, 7))  # one record per epoch
    assert {"stage", "epoch", "batch", "epoch_end"} <= {e["event"] for e in events}
    model, info = load_trained_model(str(tmp_path / "model"))
    assert info.classes == ["circle", "square", "stripes"]
    assert info.dataset_version.startswith("ds-")
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    assert result.stages[0]["trainable_share"] == 1.0


def _trainer(tiny_dataset_dir: str, stages: list[StageSpec]) -> Trainer:
    from rooivalk.data.dataset import load_dataset

    model = create_model(ModelSpec(architecture="test_efficientnet"), 3)
    groups = layer_groups(model)
    dataset = load_dataset(tiny_dataset_dir)
    spec = TrainingSpec(batch_size=8, stages=stages)
    return Trainer(
        model,
        groups,
        resolve_stages(stages, groups),
        ImageClassification(
            TrainData(dataset.subset("train"), dataset.subset("val"), 3),
            InputSpec(32, 3, (0.5,) * 3, (0.5,) * 3, False),
            spec.augment,
            spec.mix,
        ),
        spec,
    )


def test_frozen_groups_get_no_gradient_no_optimizer_state_and_keep_batchnorm(tiny_dataset_dir: str) -> None:
    trainer = _trainer(tiny_dataset_dir, [StageSpec(name="head", epochs=1, train=["head"], lr=StageLR(head=1e-2))])
    model = trainer.model
    trainer.enter_stage(0)
    assert trainer.optimizer is not None
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert optimized == {id(p) for n, p in model.named_parameters() if n.startswith("classifier")}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.run_epoch(trainer.stages[0])
    for name, param in model.named_parameters():
        if not name.startswith("classifier"):
            assert param.grad is None, name
    changed = {k for k in before if not torch.equal(before[k], model.state_dict()[k])}
    assert changed == {"classifier.weight", "classifier.bias"}  # BN running stats in frozen groups untouched


def test_unfrozen_groups_join_the_optimizer_and_the_schedule(tiny_dataset_dir: str) -> None:
    stages = [
        StageSpec(name="head", epochs=1, train=["head"], lr=StageLR(head=1e-2)),
        StageSpec(name="top", epochs=1, train=["last:1", "head"], lr=StageLR(head=1e-2, backbone=1e-3)),
    ]
    trainer = _trainer(tiny_dataset_dir, stages)
    trainer.enter_stage(0)
    trainer.run_epoch(trainer.stages[0])
    assert trainer.optimizer is not None
    head_state = {
        id(p): trainer.optimizer.state[p]["exp_avg"].clone()
        for g in trainer.optimizer.param_groups
        for p in g["params"]
    }
    trainer.position.next_stage()
    trainer.enter_stage(1)
    groups = [g["group"] for g in trainer.optimizer.param_groups]
    last = trainer.groups[-2].name
    assert last in groups
    assert "head" in groups
    # the head kept its Adam moments across the boundary; the new group gets the stage's LR schedule
    for g in trainer.optimizer.param_groups:
        for p in g["params"]:
            if id(p) in head_state:
                assert torch.equal(trainer.optimizer.state[p]["exp_avg"], head_state[id(p)])
    assert {g["group"]: g["initial_lr"] for g in trainer.optimizer.param_groups}[last] == pytest.approx(1e-3)
    lrs_before = [g["lr"] for g in trainer.optimizer.param_groups]
    trainer.run_epoch(trainer.stages[1])
    assert [g["lr"] for g in trainer.optimizer.param_groups] != lrs_before  # every group is scheduled


def test_staged_plan_reports_each_stage(tiny_dataset_dir: str, tmp_path: Path) -> None:
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


def test_bf16_autocast_trains_on_cpu(tiny_dataset_dir: str, tmp_path: Path) -> None:
    plan = _plan(tiny_dataset_dir, epochs=2, lr=3e-3, precision="bf16")
    result = train_model(plan, tiny_dataset_dir, str(tmp_path / "model"))
    assert result.metrics["global_steps"] == 2 * 5
    state = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    assert all(t.dtype != torch.bfloat16 for t in state.values())  # autocast leaves fp32 master weights


def test_fp16_without_a_gpu_is_a_clear_error(tiny_dataset_dir: str, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        train_model(_plan(tiny_dataset_dir, precision="fp16"), tiny_dataset_dir, str(tmp_path / "model"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_with_grad_scaler_on_gpu(tiny_dataset_dir: str, tmp_path: Path) -> None:
    result = train_model(_plan(tiny_dataset_dir, epochs=2, precision="fp16"), tiny_dataset_dir, str(tmp_path / "m"))
    assert result.metrics["global_steps"] == 2 * 5


def test_techniques_together(tiny_dataset_dir: str, tmp_path: Path) -> None:
    """The reference optical config's techniques in one run: they compose."""
    plan = _plan(
        tiny_dataset_dir,
        epochs=3,
        lr=3e-3,
        loss={"name": "focal", "focal_gamma": 2.0, "class_weights": "balanced"},
        mix={"mixup_alpha": 0.2, "cutmix_alpha": 1.0},
        augment={
            "random_resized_crop": [0.6, 1.0],
            "hflip": 0.5,
            "color_jitter": 0.2,
            "fog": 0.3,
            "rain": 0.3,
            "motion_blur": 0.3,
        },
        ema={"enabled": True, "decay": 0.9},
        early_stopping={"enabled": True, "patience": 5},
        scheduler={"name": "onecycle"},
        optimizer={"name": "sgd", "momentum": 0.9, "weight_decay": 1e-4},
    )
    result = train_model(plan, tiny_dataset_dir, str(tmp_path / "model"))
    assert result.metrics["global_steps"] == 3 * 5
    assert (tmp_path / "model" / "model.pt").is_file()


def test_cached_feature_head_stage_gives_the_same_head(tiny_dataset_dir: str, tmp_path: Path) -> None:
    """Training the head on cached backbone features = training it through the frozen backbone."""
    heads = {}
    for cached in (False, True):
        stage = {"name": "head", "epochs": 2, "train": ["head"], "lr": {"head": 1e-2}, "cache_features": cached}
        plan = _plan(
            tiny_dataset_dir, stages=[stage], augment={"hflip": 0.0}, deterministic=True, feature_precision="fp32"
        )
        train_model(plan, tiny_dataset_dir, str(tmp_path / str(cached)))
        heads[cached] = torch.load(tmp_path / str(cached) / "model.pt", weights_only=True)
    for name, tensor in heads[False].items():
        torch.testing.assert_close(heads[True][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(heads[False]["classifier.weight"], torch.zeros_like(heads[False]["classifier.weight"]))


def test_cache_features_needs_a_head_only_stage(tiny_dataset_dir: str, tmp_path: Path) -> None:
    stage = {
        "name": "top",
        "epochs": 1,
        "train": ["last:1", "head"],
        "lr": {"top": 1e-2, "ratio": 2.6},
        "cache_features": True,
    }
    with pytest.raises(ValueError, match="cache_features needs a head-only stage"):
        train_model(_plan(tiny_dataset_dir, stages=[stage]), tiny_dataset_dir, str(tmp_path / "m"))


def test_an_image_model_fine_tunes_quantization_aware_after_its_stages(tiny_dataset_dir: str, tmp_path: Path) -> None:
    plan = _plan(tiny_dataset_dir, epochs=2, lr=3e-3, qat={"epochs": 1, "lr": 1e-4})
    logged: list[tuple[dict, int]] = []
    result = train_model(plan, tiny_dataset_dir, str(tmp_path / "model"), None, lambda m, s: logged.append((m, s)))
    assert [stage["stage"] for stage in result.stages] == ["full", "qat"]
    assert [s for _, s in logged] == [1, 2, 3]  # the QAT epoch goes on from the stages' count
    assert result.metrics["best_epoch"] == 3.0  # the QAT epoch ships
    assert result.metrics["qat_layers"] > 0
    model, _ = load_trained_model(str(tmp_path / "model"))  # a plain model: no fake quantization left
    assert not any("parametrizations" in key or "qat_range" in key for key in model.state_dict())
