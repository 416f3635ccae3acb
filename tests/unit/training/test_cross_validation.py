"""k-fold cross-validation of sequence and table plans (rooivalk.training.cross_validation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rooivalk.data import ingest_data
from rooivalk.data.dataset import SPLIT_CODES
from rooivalk.data.datasets import load_array_dataset
from rooivalk.models.array_artifact import load_array_model, load_xgboost_member
from rooivalk.plan import PlanError
from rooivalk.plan.loading import read_plan_file, validate_plan
from rooivalk.training import train_model
from rooivalk.training.cross_validation import CrossValidationError, fold_splits
from tests.unit.training.test_array_training import PLANS, attribution_plan, signs_plan


@pytest.fixture(scope="module")
def signs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("cv-signs")
    dataset_dir = str(folder / "dataset")
    ingest_data(signs_plan(folder, "data.simulate.count=90").data, dataset_dir)
    return folder, dataset_dir


def test_folds_cover_the_training_split_once_stratified_and_leave_val_and_test_out(signs: tuple[Path, str]) -> None:
    dataset = load_array_dataset(signs[1])
    train = dataset.splits == SPLIT_CODES["train"]
    folds = fold_splits(dataset, 3, stratified=True, seed=0)
    held = np.stack([codes == SPLIT_CODES["val"] for codes in folds])  # (k, N)
    assert (held.sum(0) == train).all()  # every training row is held out by exactly one fold
    for codes in folds:
        assert ((codes == SPLIT_CODES["train"]) | (codes == SPLIT_CODES["val"]) == train).all()
        held_counts = np.bincount(dataset.labels[codes == SPLIT_CODES["val"]], minlength=3)
        train_counts = np.bincount(dataset.labels[train], minlength=3)
        assert (np.abs(held_counts - train_counts / 3) <= 1).all()  # stratified: each class in proportion
    again = fold_splits(dataset, 3, stratified=True, seed=0)
    assert all((a == b).all() for a, b in zip(folds, again, strict=True))  # seeded
    with pytest.raises(CrossValidationError, match="folds: 500 folds need at least 500 training rows"):
        fold_splits(dataset, 500, stratified=False, seed=0)
    with pytest.raises(CrossValidationError, match="of every class"):
        fold_splits(dataset, int(np.bincount(dataset.labels[train]).min()) + 1, stratified=True, seed=0)


def test_a_cross_validated_plan_reports_fold_means_and_refits_on_the_whole_training_split(
    signs: tuple[Path, str], tmp_path: Path
) -> None:
    folder, dataset_dir = signs
    plan = signs_plan(folder, "evaluation.cross_validation={folds: 3}")
    events: list[dict[str, object]] = []
    result = train_model(plan, dataset_dir, str(tmp_path / "model"), progress=events.append)
    fold_ends = [event for event in events if event.get("event") == "fold_end"]
    assert [event["fold"] for event in fold_ends] == [0, 1, 2]
    saved = json.loads((tmp_path / "model" / "cross_validation.json").read_text())
    accuracies = [fold["accuracy"] for fold in saved["folds"]]
    assert result.metrics["cv_accuracy_mean"] == pytest.approx(np.mean(accuracies))
    assert result.metrics["cv_accuracy_std"] == pytest.approx(np.std(accuracies))
    assert fold_ends[-1]["cv_accuracy_mean"] == pytest.approx(np.mean(accuracies))
    for name in ("macro_f1", "min_class_recall", "log_loss", "best_epoch"):
        assert f"cv_{name}_mean" in result.metrics
        assert f"fold2_{name}" in result.metrics
    for j in range(3):
        assert (tmp_path / "model" / "folds" / str(j) / "model.json").is_file()
    # refit all: one more model, trained on the whole training split: not any fold's
    shipped = (tmp_path / "model" / "model.pt").read_bytes()
    assert all(shipped != (tmp_path / "model" / "folds" / str(j) / "model.pt").read_bytes() for j in range(3))
    refit_events = [event for event in events if event.get("event") == "epoch_end" and "fold" not in event]
    assert refit_events  # its epochs are not tagged with a fold
    load_array_model(str(tmp_path / "model"))


def test_refit_best_fold_ships_that_fold_model(signs: tuple[Path, str], tmp_path: Path) -> None:
    folder, dataset_dir = signs
    plan = signs_plan(folder, "evaluation.cross_validation={folds: 2, refit: best_fold, stratified: false}")
    result = train_model(plan, dataset_dir, str(tmp_path / "model"))
    best = int(result.metrics["cv_best_fold"])
    shipped = (tmp_path / "model" / "model.pt").read_bytes()
    assert shipped == (tmp_path / "model" / "folds" / str(best) / "model.pt").read_bytes()


def test_a_table_ensemble_cross_validates_with_its_xgboost_member(tmp_path: Path) -> None:
    plan = attribution_plan(tmp_path, "evaluation.cross_validation={folds: 2, refit: best_fold}")
    dataset_dir = str(tmp_path / "dataset")
    ingest_data(plan.data, dataset_dir)
    result = train_model(plan, dataset_dir, str(tmp_path / "model"))
    assert 0 <= result.metrics["cv_accuracy_mean"] <= 1
    assert (tmp_path / "model" / "folds" / "1" / "xgboost.ubj").is_file()
    load_xgboost_member(str(tmp_path / "model"), load_array_model(str(tmp_path / "model"))[1])  # shipped whole


def test_validate_refuses_cross_validation_where_it_does_not_apply() -> None:
    raw = read_plan_file(PLANS / "detection.yaml")
    raw.setdefault("evaluation", {})["cross_validation"] = {"folds": 3}
    with pytest.raises(PlanError, match="evaluation.cross_validation: applies to sequence, table and image"):
        validate_plan(raw)
    raw = read_plan_file(PLANS / "fashion_finetune.yaml")
    raw.setdefault("evaluation", {})["cross_validation"] = {"folds": 3}
    raw["training"]["distributed"] = {"nproc_per_node": 2}
    with pytest.raises(PlanError, match="fold models train in one process"):
        validate_plan(raw)
    raw = read_plan_file(PLANS / "sign_language_search.yaml")
    raw["evaluation"]["cross_validation"] = {"folds": 3}
    raw["search"]["objective"] = {}
    assert validate_plan(raw).search.objective.name == "cv_accuracy_mean"  # type: ignore[union-attr]
    raw["search"]["objective"] = {"metric": "val_accuracy"}
    with pytest.raises(PlanError, match="search.objective.metric: 'val_accuracy': with evaluation.cross_validation"):
        validate_plan(raw)


def test_the_run_report_shows_each_fold_and_the_mean() -> None:
    from rooivalk.cli.report_tables import training_section

    metrics = {"train_seconds": 3.0, "cv_folds": 2.0, "cv_accuracy_mean": 0.75, "cv_accuracy_std": 0.05}
    metrics |= {"fold0_accuracy": 0.7, "fold1_accuracy": 0.8}
    lines = training_section({"stages": [], "metrics": metrics}, "best_val_accuracy", "val accuracy")
    assert "## Cross-validation" in lines
    assert "| accuracy | 0.7000 | 0.8000 | 0.7500 | 0.0500 |" in lines
    assert "## Cross-validation" not in training_section({"stages": [], "metrics": {}}, "x", "x")


def test_an_image_plan_cross_validates_its_classifier(tiny_dataset_dir: str, tmp_path: Path) -> None:
    from rooivalk.plan import Plan

    plan = Plan.model_validate(
        {
            "name": "t",
            "data": {"source": tiny_dataset_dir, "format": "image_folder"},
            "model": {"architecture": "test_efficientnet", "input_size": 32, "drop_rate": 0.0},
            "training": {"batch_size": 8, "threads": 1, "epochs": 1, "lr": 3e-3},
            "evaluation": {"cross_validation": {"folds": 2, "refit": "best_fold"}},
        }
    )
    events: list[dict[str, object]] = []
    result = train_model(plan, tiny_dataset_dir, str(tmp_path / "model"), progress=events.append)
    assert [event["fold"] for event in events if event.get("event") == "fold_end"] == [0, 1]
    assert 0 <= result.metrics["cv_accuracy_mean"] <= 1
    assert result.metrics["cv_folds"] == 2
    best = int(result.metrics["cv_best_fold"])
    assert (tmp_path / "model" / "model.pt").read_bytes() == (
        tmp_path / "model" / "folds" / str(best) / "model.pt"
    ).read_bytes()
