"""Knowledge distillation (rooivalk.training.engine.distillation, rooivalk.training.teachers): the loss against a
hand computation, an ensemble's averaged probabilities, a sequence student trained through `train_model` with a
teacher trained before it, and the teacher refused (missing, other classes, other inputs, wrong logits) with
its plan key."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from rooivalk.data import ingest_data
from rooivalk.models import layer_groups
from rooivalk.plan import DistillationSpec, Plan, load_plan
from rooivalk.training import train_model
from rooivalk.training.engine.distillation import (
    Teacher,
    TeacherMember,
    distillation_loss,
    kd_term,
    soft_probabilities,
)
from rooivalk.training.engine.stages import model_stages
from rooivalk.training.tasks import TensorClassification
from rooivalk.training.teachers import array_teacher

REPO = Path(__file__).resolve().parents[3]
QUICK = ["training.threads=1", "evaluation.gates=[]", "training.early_stopping.enabled=false"]


# -- the loss ------------------------------------------------------------------------------------------
def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_the_kd_term_is_t_squared_times_the_kl_of_softened_distributions() -> None:
    student = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    teacher = np.array([[1.5, 1.0, -0.5], [-1.0, 0.0, 2.0]])
    temperature = 4.0
    p_t, p_s = _softmax(teacher / temperature), _softmax(student / temperature)
    by_hand = temperature**2 * float(np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1)))
    probabilities = soft_probabilities([torch.tensor(teacher)], temperature)
    assert float(kd_term(torch.tensor(student), probabilities, temperature)) == pytest.approx(by_hand, rel=1e-5)
    # T = 1 is the plain KL; identical logits give 0
    plain = float(np.mean(np.sum(_softmax(teacher) * (np.log(_softmax(teacher)) - np.log(_softmax(student))), 1)))
    one = kd_term(torch.tensor(student), soft_probabilities([torch.tensor(teacher)], 1.0), 1.0)
    assert float(one) == pytest.approx(plain, rel=1e-5)
    same = kd_term(torch.tensor(teacher), probabilities, temperature)
    assert float(same) == pytest.approx(0.0, abs=1e-6)


def test_the_loss_blends_the_plans_loss_and_the_kd_term_by_weight() -> None:
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 4, generator=generator), torch.randn(5, 4, generator=generator)
    target = torch.tensor([0, 1, 2, 3, 1])
    hard = F.cross_entropy(student, target, label_smoothing=0.1)
    probabilities = soft_probabilities([teacher], 2.0)
    kd = kd_term(student, probabilities, 2.0)
    loss, term = distillation_loss(hard, student, probabilities, 2.0, 0.7)
    assert float(loss) == pytest.approx(0.3 * float(hard) + 0.7 * float(kd), rel=1e-6)
    assert float(term) == pytest.approx(float(kd))
    plain, _ = distillation_loss(hard, student, probabilities, 2.0, 0.0)
    assert float(plain) == float(hard)  # weight 0: exactly the plan's loss
    only_kd, _ = distillation_loss(hard, student, probabilities, 2.0, 1.0)
    assert float(only_kd) == pytest.approx(float(kd))
    # soft (Mixup) targets go to the plan's loss unchanged
    soft = F.one_hot(target, 4).float() * 0.6 + F.one_hot(target.flip(0), 4).float() * 0.4
    mixed, _ = distillation_loss(F.cross_entropy(student, soft), student, probabilities, 2.0, 0.5)
    assert float(mixed) == pytest.approx(0.5 * float(F.cross_entropy(student, soft)) + 0.5 * float(kd), rel=1e-6)


def test_an_ensemble_averages_probabilities_not_logits() -> None:
    first, second = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 4.0]])
    averaged = soft_probabilities([first, second], 2.0)
    expected = (F.softmax(first / 2.0, dim=1) + F.softmax(second / 2.0, dim=1)) / 2
    assert torch.allclose(averaged, expected)
    assert not torch.allclose(averaged, F.softmax((first + second) / 2 / 2.0, dim=1))
    assert float(averaged.sum()) == pytest.approx(1.0)


def test_the_kd_term_is_float32_under_bfloat16_logits() -> None:
    logits = torch.randn(4, 3).bfloat16()
    probabilities = soft_probabilities([logits], 4.0)
    assert probabilities.dtype == torch.float32
    assert kd_term(logits, probabilities, 4.0).dtype == torch.float32


# -- the engine's teacher on a tiny tensor task ----------------------------------------------------------
def _tensor_task(classes: int = 3) -> TensorClassification:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 5)).astype(np.float32)
    y = rng.integers(0, classes, 32)
    return TensorClassification({"inputs": x}, y, {"inputs": x[:8]}, y[:8], classes)


def test_a_teacher_with_other_logits_is_refused_with_its_key() -> None:
    task = _tensor_task()
    wrong = Teacher(
        [TeacherMember(nn.Linear(5, 4), "runs/wide")], 4.0, 0.5, 3, "sensors.rf.training.distillation.teacher"
    )
    with pytest.raises(ValueError, match=r"sensors\.rf\.training\.distillation\.teacher: runs/wide gives logits"):
        wrong.check(task, task.eval_batch(2, torch.device("cpu")))
    narrow = Teacher([TeacherMember(nn.Linear(7, 3), "runs/narrow")], 4.0, 0.5, 3)
    with pytest.raises(ValueError, match=r"training\.distillation\.teacher: runs/narrow cannot run on the student"):
        narrow.check(task, task.eval_batch(2, torch.device("cpu")))


def test_the_teacher_is_frozen_and_the_task_makes_the_students_logits() -> None:
    task = _tensor_task()
    teacher_model = nn.Sequential(nn.Linear(5, 3), nn.Dropout(0.5))
    teacher = Teacher([TeacherMember(teacher_model, "t")], 2.0, 0.5, 3)
    assert not teacher_model.training
    assert not any(p.requires_grad for p in teacher_model.parameters())
    student = nn.Linear(5, 3)
    inputs, target = task.train_batch(np.arange(8), None, None, torch.device("cpu"))  # type: ignore[arg-type]
    criterion = nn.CrossEntropyLoss()
    loss = teacher.training_loss(task, student, inputs, target, criterion)
    logits = student(inputs)
    expected, _ = distillation_loss(criterion(logits, target), logits, teacher.probabilities(task, inputs), 2.0, 0.5)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert set(teacher.last_terms) == {"kd_loss", "hard_loss"}
    loss.backward()  # type: ignore[no-untyped-call]
    assert student.weight.grad is not None
    assert teacher_model[0].weight.grad is None


# -- a sequence student through train_model -------------------------------------------------------------
def signs_plan(folder: Path, *overrides: str) -> Plan:
    return load_plan(
        REPO / "pipelines" / "plans" / "sign_language.yaml",
        [
            *QUICK,
            f"data.source={folder / 'signs.parquet'}",
            "data.simulate.count=60",
            "data.simulate.num_classes=3",
            "data.simulate.min_length=5",
            "data.simulate.max_length=8",
            "data.sequence.length=6",
            "model.architecture=gru-8x1",
            "training.stages.0.epochs=2",
            "training.stages.1.epochs=1",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def signs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(folder, dataset, a trained LSTM teacher 16 x 1) of 60 simulated 3-sign sequences."""
    folder = tmp_path_factory.mktemp("signs")
    dataset_dir = str(folder / "dataset")
    ingest_data(signs_plan(folder).data, dataset_dir)
    teacher_dir = str(folder / "teacher")
    train_model(signs_plan(folder, "model.architecture=lstm-16x1"), dataset_dir, teacher_dir)
    return folder, dataset_dir, teacher_dir


def _history(plan: Plan, dataset_dir: str, model_dir: str) -> list[dict[str, float]]:
    logged: list[dict[str, float]] = []
    train_model(plan, dataset_dir, model_dir, log_metrics=lambda metrics, _step: logged.append(dict(metrics)))
    return logged


def test_a_distilled_student_trains_on_the_blended_loss(signs: tuple[Path, str, str], tmp_path: Path) -> None:
    folder, dataset_dir, teacher_dir = signs
    plain = _history(signs_plan(folder), dataset_dir, str(tmp_path / "plain"))
    distill = f"training.distillation={{teacher: {teacher_dir}, temperature: 2.0, weight: 0.7}}"
    distilled = _history(signs_plan(folder, distill), dataset_dir, str(tmp_path / "student"))
    assert len(distilled) == len(plain) == 3
    assert "train_kd_loss" not in plain[0]
    for epoch, other in zip(distilled, plain, strict=True):
        assert epoch["train_loss"] != pytest.approx(other["train_loss"])
        # the logged loss is the blend of its logged terms (per-batch means, averaged over the epoch)
        blend = 0.3 * epoch["train_hard_loss"] + 0.7 * epoch["train_kd_loss"]
        assert epoch["train_loss"] == pytest.approx(blend, rel=1e-5)
        assert epoch["train_kd_loss"] > 0
    # an ensemble of two teachers (the same one twice averages to itself: the same run)
    twice = (
        f"training.distillation={{teacher: [{teacher_dir}, 'file://{teacher_dir}/'], temperature: 2.0, weight: 0.7}}"
    )
    again = _history(signs_plan(folder, twice), dataset_dir, str(tmp_path / "ensemble"))
    assert [e["train_loss"] for e in again] == pytest.approx([e["train_loss"] for e in distilled], rel=1e-5)


def test_the_teacher_is_refused_naming_the_key(signs: tuple[Path, str, str], tmp_path: Path) -> None:
    folder, dataset_dir, teacher_dir = signs

    def refused(teacher: str, match: str) -> None:
        plan = signs_plan(folder, f"training.distillation={{teacher: '{teacher}'}}")
        with pytest.raises(ValueError, match=match):
            train_model(plan, dataset_dir, str(tmp_path / "student"))

    refused(str(tmp_path / "nowhere"), r"training\.distillation\.teacher: .*nowhere is not a trained rooivalk model")
    reordered = tmp_path / "reordered"
    shutil.copytree(teacher_dir, reordered)
    info = json.loads((reordered / "model.json").read_text())
    info["classes"] = info["classes"][::-1]
    (reordered / "model.json").write_text(json.dumps(info))
    refused(str(reordered), r"training\.distillation\.teacher: .*reordered was trained on classes .* in the same order")
    info["classes"] = info["classes"][::-1]
    info["input_names"] = info["input_names"][::-1]
    (reordered / "model.json").write_text(json.dumps(info))
    refused(str(reordered), r"training\.distillation\.teacher: .*reordered takes inputs")


def test_a_teacher_standardized_otherwise_sees_the_students_raw_frames(signs: tuple[Path, str, str]) -> None:
    _, _, teacher_dir = signs
    from rooivalk.models.array_artifact import read_array_model_info

    info = read_array_model_info(teacher_dir)
    student = info.model_copy(update={"mean": [m + 1.0 for m in info.mean], "std": [s * 2.0 for s in info.std]})
    teacher = array_teacher(DistillationSpec(teacher=teacher_dir), student)
    raw = torch.randn(2, 3, len(info.mean))
    standardized = (raw - torch.tensor(student.mean)) / torch.tensor(student.std)
    prepared = teacher.members[0].prepare({"sequences": standardized, "lengths": torch.tensor([3, 2])})
    assert isinstance(prepared, dict)
    expected = (raw - torch.tensor(info.mean)) / torch.tensor(info.std)
    assert torch.allclose(prepared["sequences"], expected, atol=1e-5)


def test_schedule_auto_trains_its_head_stage_uncached_when_distilling() -> None:
    from rooivalk.models import create_unweighted_model
    from rooivalk.plan import ModelSpec, TrainingSpec

    groups = layer_groups(create_unweighted_model(ModelSpec(architecture="test_efficientnet")))
    plain = model_stages(TrainingSpec(), pretrained=True, groups=groups)
    distilled = model_stages(TrainingSpec(distillation={"teacher": "t"}), pretrained=True, groups=groups)
    assert plain[0].cache_features
    assert not distilled[0].cache_features
    assert [s.group_lrs for s in distilled] == [s.group_lrs for s in plain]
    assert math.isclose(distilled[0].group_lrs["head"], plain[0].group_lrs["head"])


# -- an image student ------------------------------------------------------------------------------------
def test_an_image_student_learns_from_a_teacher_of_another_input_size(tiny_dataset_dir: str, tmp_path: Path) -> None:
    from tests.conftest import tiny_plan_dict

    teacher_dir = str(tmp_path / "teacher")
    train_model(Plan.model_validate(tiny_plan_dict(tiny_dataset_dir, epochs=1)), tiny_dataset_dir, teacher_dir)
    raw = tiny_plan_dict(tiny_dataset_dir, epochs=1, distillation={"teacher": teacher_dir, "weight": 0.5})
    raw["model"]["input_size"] = 24  # the teacher sees the batch resized to its 32 px
    logged: list[dict[str, float]] = []
    train_model(
        Plan.model_validate(raw), tiny_dataset_dir, str(tmp_path / "student"), log_metrics=lambda m, _: logged.append(m)
    )
    (epoch,) = logged
    assert epoch["train_loss"] == pytest.approx(0.5 * epoch["train_hard_loss"] + 0.5 * epoch["train_kd_loss"], rel=1e-5)


@pytest.mark.slow
def test_distillation_trains_under_torchrun_with_two_processes(tiny_dataset_dir: str, tmp_path: Path) -> None:
    from tests.conftest import tiny_plan_dict

    teacher_dir = str(tmp_path / "teacher")
    train_model(Plan.model_validate(tiny_plan_dict(tiny_dataset_dir, epochs=1)), tiny_dataset_dir, teacher_dir)
    raw = tiny_plan_dict(
        tiny_dataset_dir, epochs=2, distillation={"teacher": teacher_dir}, distributed={"nproc_per_node": 2}
    )
    logged: list[dict[str, float]] = []
    result = train_model(
        Plan.model_validate(raw), tiny_dataset_dir, str(tmp_path / "student"), log_metrics=lambda m, _: logged.append(m)
    )
    assert result.metrics["global_steps"] == 2 * 5  # 43 train images, global batch 8
    assert [set(epoch) >= {"train_kd_loss", "train_hard_loss"} for epoch in logged] == [True, True]
    for epoch in logged:  # the terms summed over both ranks blend into the loss as in one process
        assert epoch["train_loss"] == pytest.approx(0.5 * epoch["train_hard_loss"] + 0.5 * epoch["train_kd_loss"])


# -- a sensor student ------------------------------------------------------------------------------------
def test_a_sensor_student_learns_from_a_model_of_the_same_sensor(tmp_path: Path) -> None:
    from rooivalk.data.ingest_multisensor import ingest_multisensor
    from rooivalk.data.multisensor_dataset import load_multisensor
    from rooivalk.data.simulators.counter_drone import simulate_counter_drone
    from rooivalk.models.sensor_artifacts import save_sensor_model
    from rooivalk.plan import DataSpec, SensorSpec
    from rooivalk.training.sensor_training import train_sensor

    simulate_counter_drone(str(tmp_path / "events"), 40, seed=1, image_size=16)
    split = {"train": 0.6, "val": 0.2, "test": 0.2}
    spec = DataSpec(source=str(tmp_path / "events"), format="multisensor", split=split)
    ingest_multisensor(spec, str(tmp_path / "dataset"), ["radar"])
    dataset = load_multisensor(str(tmp_path / "dataset"))
    training = {"epochs": 2, "batch_size": 8, "threads": 1}

    def sensor(architecture: str, **extra: object) -> SensorSpec:
        model = {"family": "radar_sequence", "architecture": architecture}
        return SensorSpec.model_validate({"model": model, "training": {**training, **extra}})

    teacher = sensor("kinematic_gru")
    result = train_sensor("radar", teacher, dataset)
    teacher_dir = str(tmp_path / "teacher")
    save_sensor_model(teacher_dir, result, teacher.model, dataset.info.classes, dataset.info.version_id)
    logged: list[dict[str, float]] = []
    student = sensor("kinematic_ssm", distillation={"teacher": teacher_dir, "weight": 0.25})
    train_sensor("radar", student, dataset, log_metrics=lambda m, _: logged.append(m))
    assert len(logged) == 2
    for epoch in logged:
        blend = 0.75 * epoch["train_hard_loss"] + 0.25 * epoch["train_kd_loss"]
        assert epoch["train_loss"] == pytest.approx(blend, rel=1e-5)
    image_dir = str(tmp_path / "image")
    shutil.copytree(teacher_dir, image_dir)
    Path(image_dir, "sensor.json").rename(Path(image_dir, "model.json"))  # an image model's info file name
    key = r"sensors\.radar\.training\.distillation\.teacher"
    with pytest.raises(ValueError, match=rf"{key}: .* holds a model of kind 'image'"):
        train_sensor("radar", sensor("kinematic_ssm", distillation={"teacher": image_dir}), dataset)
