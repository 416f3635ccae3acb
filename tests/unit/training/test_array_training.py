"""Training sequence and table plans (rooivalk.training.array_training, ensemble_training): the dataset
fills model.num_features and a count the plan fixed must match it; an ensemble's weights given or fitted
on the validation split land in model.json and the metrics; a stage's sequence_augment_probability
reaches SequenceClassification.train_batch (0 leaves the standardized raw rows, 1 moves every one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import softmax

from rooivalk import storage
from rooivalk.data import ingest_data
from rooivalk.data.datasets import load_array_dataset
from rooivalk.data.sequence_dataset import SequenceDataset
from rooivalk.data.simulators.sign_language import FEATURES as LANDMARK_FEATURES
from rooivalk.evaluation.ensemble import fit_weights
from rooivalk.models import create_model, layer_groups
from rooivalk.models.array_artifact import XGBOOST_FILE, load_array_model, load_xgboost_member, read_array_model_info
from rooivalk.models.array_inference import INPUTS, LENGTHS, SEQUENCES, array_logits, model_arrays
from rooivalk.plan import Plan, load_plan
from rooivalk.training import train_model
from rooivalk.training.array_training import array_task, resolved_model_spec
from rooivalk.training.engine.stages import ResolvedStage, plan_stages
from rooivalk.training.tasks.arrays import SequenceClassification
from rooivalk.training.tasks.sequence_augment import SequenceAugment, SequenceAugmentSettings, landmark_layout
from rooivalk.training.xgboost_training import predict_probabilities

REPO = Path(__file__).resolve().parents[3]
PLANS = REPO / "pipelines" / "plans"
QUICK = ["training.threads=1", "evaluation.gates=[]"]
CPU = torch.device("cpu")


def signs_plan(folder: Path, *overrides: str) -> Plan:
    return load_plan(
        PLANS / "sign_language.yaml",
        [
            *QUICK,
            f"data.source={folder / 'signs.parquet'}",
            "data.simulate.count=60",
            "data.simulate.num_classes=3",
            "data.simulate.min_length=5",
            "data.simulate.max_length=8",
            "data.sequence.length=6",
            "model.architecture=gru-8x1",
            "training.stages.0.epochs=1",
            "training.stages.1.epochs=1",
            *overrides,
        ],
    )


def attribution_plan(folder: Path, *overrides: str) -> Plan:
    return load_plan(
        PLANS / "attribution.yaml",
        [
            *QUICK,
            f"data.source={folder / 'events.parquet'}",
            "data.simulate.count=120",
            "model.architecture=16-8",
            "training.epochs=1",
            "ensemble.xgboost.trees=5",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def signs_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("signs")
    dataset_dir = str(folder / "dataset")
    ingest_data(signs_plan(folder).data, dataset_dir)
    return folder, dataset_dir


@pytest.fixture(scope="module")
def attribution_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("attribution")
    dataset_dir = str(folder / "dataset")
    ingest_data(attribution_plan(folder).data, dataset_dir)
    return folder, dataset_dir


def test_a_fixed_num_features_the_data_does_not_have_is_refused(signs_dataset: tuple[Path, str]) -> None:
    folder, dataset_dir = signs_dataset
    dataset = load_array_dataset(dataset_dir)
    assert len(dataset.info.classes) == 3
    plan = signs_plan(folder, "model.num_features=5")
    message = rf"model\.num_features is 5 but dataset {dataset.info.version_id} has 63"
    with pytest.raises(ValueError, match=message):
        train_model(plan, dataset_dir, str(folder / "model-5"))
    assert not (folder / "model-5").exists()  # refused before anything is written
    with pytest.raises(ValueError, match=r"model\.num_classes is 4 but dataset .* has 3"):
        resolved_model_spec(signs_plan(folder, "model.num_classes=4").single_model, dataset)


def test_num_features_auto_or_the_right_count_trains_with_the_datas_count(
    signs_dataset: tuple[Path, str],
) -> None:
    folder, dataset_dir = signs_dataset
    dataset = load_array_dataset(dataset_dir)
    assert resolved_model_spec(signs_plan(folder).single_model, dataset).num_features == 63
    plan = signs_plan(folder, "model.num_features=63")
    result = train_model(plan, dataset_dir, str(folder / "model-63"))
    assert result.metrics["num_features"] == 63.0
    assert result.metrics["num_stages"] == 2.0
    info = read_array_model_info(str(folder / "model-63"))
    assert (info.kind, info.spec.num_features, info.spec.num_classes) == ("sequences", 63, 3)
    assert info.input_names == LANDMARK_FEATURES
    assert info.length == 6
    assert isinstance(dataset, SequenceDataset)
    assert info.mean == dataset.info.standardization.mean
    model, _ = load_array_model(str(folder / "model-63"))
    assert model.recurrent[0].input_size == 63


def val_probabilities(model_dir: str, dataset_dir: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Both members' validation probabilities, recomputed from the saved model folder."""
    model, info = load_array_model(model_dir)
    arrays, labels = model_arrays(info, load_array_dataset(dataset_dir), "val")
    return {
        "model": softmax(array_logits(model, arrays, info.num_classes), axis=1),
        "xgboost": predict_probabilities(load_xgboost_member(model_dir, info), np.asarray(arrays[INPUTS])),
    }, labels


def test_fitted_ensemble_weights_sum_to_one_and_are_recorded(attribution_dataset: tuple[Path, str]) -> None:
    folder, dataset_dir = attribution_dataset
    model_dir = str(folder / "fitted")
    result = train_model(attribution_plan(folder, "ensemble.weights=fitted"), dataset_dir, model_dir)
    info = read_array_model_info(model_dir)
    assert info.ensemble is not None
    assert info.ensemble.fitted is True
    weights = info.ensemble.weights
    assert list(weights) == ["model", "xgboost"]
    assert all(0.0 <= weight <= 1.0 for weight in weights.values())
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-9)
    assert {name: result.metrics[f"ensemble_weight_{name}"] for name in weights} == weights
    assert info.ensemble.xgboost_sha256 == storage.sha256_bytes((Path(model_dir) / XGBOOST_FILE).read_bytes())
    # The weights are the ones that minimize the validation log loss of the saved members.
    probabilities, labels = val_probabilities(model_dir, dataset_dir)
    refit = fit_weights(probabilities, labels)
    for name in weights:
        assert weights[name] == pytest.approx(refit[name], abs=1e-6)
    combined = sum(weights[name] * probabilities[name] for name in weights)
    accuracy = float((np.asarray(combined).argmax(1) == labels).mean())
    assert result.metrics["ensemble_val_accuracy"] == pytest.approx(accuracy)
    assert 1 <= result.metrics["xgboost_rounds"] <= 5


def test_given_ensemble_weights_are_normalized_and_not_fitted(attribution_dataset: tuple[Path, str]) -> None:
    folder, dataset_dir = attribution_dataset
    model_dir = str(folder / "given")
    plan = attribution_plan(folder, "ensemble.weights={xgboost: 3, model: 1}")
    result = train_model(plan, dataset_dir, model_dir)
    info = read_array_model_info(model_dir)
    assert info.ensemble is not None
    assert info.ensemble.fitted is False
    assert info.ensemble.weights == {"model": 0.25, "xgboost": 0.75}
    assert (result.metrics["ensemble_weight_model"], result.metrics["ensemble_weight_xgboost"]) == (0.25, 0.75)


NAMES = LANDMARK_FEATURES
MEAN = np.linspace(0.1, 0.6, 63).astype(np.float32)
STD = np.linspace(0.5, 2.0, 63).astype(np.float32)


def sequence_task(augment: SequenceAugment | None) -> tuple[SequenceClassification, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    lengths = np.array([5, 3, 4, 2, 5, 1], dtype=np.int64)
    sequences = rng.uniform(0, 1, (6, 5, 63)).astype(np.float32)
    for row, length in enumerate(lengths):
        sequences[row, length:] = sequences[row, length - 1]  # edge padding, as the dataset stores it
    train: dict[str, np.ndarray] = {SEQUENCES: sequences, LENGTHS: lengths}
    labels = np.array([0, 1, 2, 0, 1, 2])
    task = SequenceClassification(train, labels, train, labels, 3, mean=MEAN, std=STD, augment=augment)
    return task, train


def stage(probability: float | None) -> ResolvedStage:
    return ResolvedStage("stage", 1, {"recurrent": 1e-3, "head": 1e-3}, sequence_augment_probability=probability)


def standardized(sequences: np.ndarray | torch.Tensor) -> torch.Tensor:
    return (torch.as_tensor(sequences) - torch.from_numpy(MEAN)) / torch.from_numpy(STD)


INDEX = np.array([4, 0, 2, 1])


def test_a_stage_probability_of_zero_leaves_the_standardized_raw_rows() -> None:
    augment = SequenceAugment(SequenceAugmentSettings(probability=1.0), landmark_layout(NAMES))
    task, train = sequence_task(augment)
    inputs, target = task.train_batch(INDEX, stage(0.0), torch.Generator().manual_seed(0), CPU)
    assert isinstance(inputs, dict)
    assert torch.equal(inputs[SEQUENCES], standardized(train[SEQUENCES][INDEX]))
    assert torch.equal(inputs[LENGTHS], torch.from_numpy(train[LENGTHS][INDEX]))
    assert target.tolist() == [1, 0, 2, 1]


def test_a_stage_probability_of_one_moves_every_row_as_the_augmentation_at_one_would() -> None:
    augment = SequenceAugment(SequenceAugmentSettings(probability=0.0), landmark_layout(NAMES))
    task, train = sequence_task(augment)
    inputs, _ = task.train_batch(INDEX, stage(1.0), torch.Generator().manual_seed(0), CPU)
    assert isinstance(inputs, dict)
    raw = standardized(train[SEQUENCES][INDEX])
    moved = (inputs[SEQUENCES] - raw).abs().flatten(1).amax(1)
    assert (moved > 1e-3).all()  # every row, though training.sequence_augment's probability is 0
    batch, lengths = torch.from_numpy(train[SEQUENCES][INDEX]), torch.from_numpy(train[LENGTHS][INDEX])
    want = augment.with_probability(1.0)(batch, lengths, torch.Generator().manual_seed(0))
    torch.testing.assert_close(inputs[SEQUENCES], standardized(want), rtol=0, atol=1e-6)
    assert torch.equal(torch.from_numpy(train[SEQUENCES][INDEX]), batch)  # the split itself is untouched


def test_a_stage_without_a_probability_keeps_the_augmentations_own() -> None:
    augment = SequenceAugment(SequenceAugmentSettings(probability=0.5), landmark_layout(NAMES))
    task, train = sequence_task(augment)
    inputs, _ = task.train_batch(np.arange(6), stage(None), torch.Generator().manual_seed(3), CPU)
    assert isinstance(inputs, dict)
    batch, lengths = torch.from_numpy(train[SEQUENCES]), torch.from_numpy(train[LENGTHS])
    want = augment(batch, lengths, torch.Generator().manual_seed(3))
    torch.testing.assert_close(inputs[SEQUENCES], standardized(want), rtol=0, atol=1e-6)
    assert not torch.equal(
        inputs[SEQUENCES], standardized(augment.with_probability(1.0)(batch, lengths, torch.Generator().manual_seed(3)))
    )


def test_without_an_augmentation_or_a_generator_no_stage_augments() -> None:
    task, train = sequence_task(None)
    inputs, _ = task.train_batch(INDEX, stage(1.0), torch.Generator().manual_seed(0), CPU)
    assert isinstance(inputs, dict)
    assert torch.equal(inputs[SEQUENCES], standardized(train[SEQUENCES][INDEX]))
    augment = SequenceAugment(SequenceAugmentSettings(probability=1.0), landmark_layout(NAMES))
    task, train = sequence_task(augment)
    inputs, _ = task.train_batch(INDEX, stage(1.0), None, CPU)
    assert isinstance(inputs, dict)
    assert torch.equal(inputs[SEQUENCES], standardized(train[SEQUENCES][INDEX]))


def test_the_plans_stage_probabilities_reach_the_batches_of_training(
    signs_dataset: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, dataset_dir = signs_dataset
    plan = signs_plan(folder, "training.batch_size=8", "training.stages.1.sequence_augment_probability=0.25")
    dataset = load_array_dataset(dataset_dir)
    task = array_task(plan, dataset)
    assert isinstance(task, SequenceClassification)
    assert task.augment is not None
    assert task.augment.settings.probability == 0.5  # training.sequence_augment
    assert task.augment.layout is not None  # the simulated features are a hand
    spec = resolved_model_spec(plan.single_model, dataset)
    stages = plan_stages(plan, layer_groups(create_model(spec, 3)))
    assert [s.sequence_augment_probability for s in stages] == [None, 0.25]

    seen: list[float] = []
    original = SequenceAugment.__call__

    def spy(
        self: SequenceAugment, batch: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        seen.append(self.settings.probability)
        augmented: torch.Tensor = original(self, batch, lengths, generator)
        return augmented

    monkeypatch.setattr(SequenceAugment, "__call__", spy)
    train_model(plan, dataset_dir, str(folder / "model-spy"))
    batches = max(dataset.info.split_sizes["train"] // 8, 1)  # full batches per epoch, one epoch per stage
    assert batches >= 2
    assert seen == [0.5] * batches + [0.25] * batches


def test_lr_find_sweeps_a_sequence_plans_last_stage(tmp_path: Path) -> None:
    from rooivalk.training.lr_find import find_lr

    plan = signs_plan(tmp_path / "signs")
    ingest_data(plan.data, str(tmp_path / "ds"))
    result = find_lr(plan, str(tmp_path / "ds"), steps=12, start=1e-5, end=1.0)
    assert result.stage == "gentle"  # the plan's last stage
    assert result.lrs[0] == pytest.approx(1e-5)
    assert all(later > earlier for earlier, later in zip(result.lrs, result.lrs[1:], strict=False))
    assert len(result.losses) == len(result.lrs)
    assert result.lrs[0] <= result.suggested_lr <= result.lrs[-1]


def test_the_same_plan_trains_the_same_weights_and_a_pretrained_rnn_unfreezes_by_the_auto_schedule(
    tmp_path: Path,
) -> None:
    plan = signs_plan(tmp_path / "signs")
    ingest_data(plan.data, str(tmp_path / "ds"))
    first = train_model(plan, str(tmp_path / "ds"), str(tmp_path / "m1"))
    second = train_model(plan, str(tmp_path / "ds"), str(tmp_path / "m2"))
    assert first.artifacts["model.pt"] == second.artifacts["model.pt"]  # initial weights and batches are the seed's
    # From the first model's weights, no stages: schedule auto trains the head alone (through the frozen
    # recurrent layers: an rnn has no feature cache), then every group.
    pretrained = signs_plan(
        tmp_path / "signs",
        "training.stages=null",
        f"model.pretrained={tmp_path / 'm1' / 'model.pt'}",
        "training.auto.head_epochs=1",
        "training.epochs=1",
    )
    result = train_model(pretrained, str(tmp_path / "ds"), str(tmp_path / "m3"))
    assert [stage["stage"] for stage in result.stages] == ["head", "all"]
    assert result.metrics["stage_head_trainable_share"] < result.metrics["stage_all_trainable_share"] == 1.0
