import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rooivalk.data.dataset import load_dataset
from rooivalk.evaluation import GateFailure, check_gates, evaluate_model
from rooivalk.evaluation.metrics import classification_metrics
from rooivalk.evaluation.profile import check_frame, load_profile
from rooivalk.monitoring.drift import check_drift
from rooivalk.plan import Gate, MonitoringSpec, Plan
from rooivalk.training import train_model


def test_metrics_match_hand_computed_values() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 1, 1, 1, 2, 0])
    report = classification_metrics(labels, predictions, ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert report["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert report["per_class"]["c"]["recall"] == pytest.approx(0.5)
    # class a: one false positive (a c predicted as a) among the 4 samples that are not a
    assert report["per_class"]["a"]["false_positive_rate"] == pytest.approx(1 / 4)


def test_the_lowest_class_score_and_its_class_are_reported_for_a_per_class_minimum_gate() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 1, 1, 1, 2, 0])
    report = classification_metrics(labels, predictions, ["a", "b", "c", "never_seen"])
    # recall: a 0.5, b 1.0, c 0.5 (the first lowest wins); the class with no test sample is left out
    assert report["min_class_recall"] == pytest.approx(0.5)
    assert report["worst_class"]["recall"] == "a"
    assert report["min_class_precision"] == pytest.approx(0.5)  # a: 1 of its 2 predictions right
    gate = check_gates([Gate(metric="min_class_recall", min=0.6)], report)
    assert gate[0]["passed"] is False


def test_gates_pass_fail_and_unknown_metric() -> None:
    results = check_gates([Gate(metric="acc", min=0.9), Gate(metric="fpr", max=0.01)], {"acc": 0.95, "fpr": 0.02})
    assert [r["passed"] for r in results] == [True, False]
    with pytest.raises(KeyError, match="available"):
        check_gates([Gate(metric="nope", min=1)], {"acc": 1.0})


def _trained(
    tiny_dataset_dir: str,
    tmp_path: Path,
    gates: list[dict],
    fail_on_gate: bool = True,
    requirements: list[dict[str, Any]] | None = None,
) -> tuple[Plan, str]:
    plan = Plan.model_validate(
        {
            "name": "t",
            "data": {"source": tiny_dataset_dir, "format": "image_folder"},
            "model": {"architecture": "test_efficientnet", "input_size": 32},
            "training": {"batch_size": 8, "epochs": 1, "threads": 1},
            "evaluation": {"gates": gates, "fail_on_gate": fail_on_gate},
            "requirements": requirements or [],
        }
    )
    model_dir = str(tmp_path / "model")
    train_model(plan, tiny_dataset_dir, model_dir)
    return plan, model_dir


def test_evaluate_writes_report_and_confusion_png(tiny_dataset_dir: str, tmp_path: Path) -> None:
    plan, model_dir = _trained(tiny_dataset_dir, tmp_path, [{"metric": "test_accuracy", "min": 0.0}])
    result = evaluate_model(plan, model_dir, tiny_dataset_dir, str(tmp_path / "eval"))
    assert result.passed
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert sum(map(sum, report["confusion_matrix"])) == result.metrics["test_samples"]
    assert (tmp_path / "eval" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_writes_the_reference_profile_of_the_val_split(tiny_dataset_dir: str, tmp_path: Path) -> None:
    plan, model_dir = _trained(tiny_dataset_dir, tmp_path, [{"metric": "test_accuracy", "min": 0.0}])
    result = evaluate_model(plan, model_dir, tiny_dataset_dir, str(tmp_path / "eval"))
    reference = str(tmp_path / "eval" / "reference")
    assert result.report["reference_profile"] == reference
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["reference_profile"] == reference
    frame, info = load_profile(reference)
    dataset = load_dataset(tiny_dataset_dir)
    images, _ = dataset.subset("val")
    assert info.rows == len(frame) == len(images) > 0
    assert (info.split, info.model, info.dataset_version) == ("val", "t", dataset.info.version_id)
    assert list(frame.columns) == ["image_mean", "image_std", "image_peak", "prediction", "confidence"]
    assert info.kinds() == dict.fromkeys(["image_mean", "image_std", "image_peak", "confidence"], "numerical") | {
        "prediction": "categorical"
    }
    assert info.embeddings == {}
    assert frame["image_mean"].to_numpy() == pytest.approx(images.reshape(len(images), -1).mean(axis=1))
    assert set(frame["prediction"]) <= set(dataset.info.classes)
    assert ((frame["confidence"] >= 1 / 3 - 1e-6) & (frame["confidence"] <= 1)).all()
    same = check_frame(info, frame, "reference")
    drift = check_drift(same, same, info, MonitoringSpec())
    assert not drift.retrain
    assert drift.drifted_columns() == []


def test_failed_gate_raises_after_writing_the_report(tiny_dataset_dir: str, tmp_path: Path) -> None:
    plan, model_dir = _trained(tiny_dataset_dir, tmp_path, [{"metric": "test_accuracy", "min": 1.01}])
    with pytest.raises(GateFailure, match=r"test_accuracy = .* \(needs >= 1.01\)"):
        evaluate_model(plan, model_dir, tiny_dataset_dir, str(tmp_path / "eval"))
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["passed"] is False


def test_a_per_class_minimum_gate_names_the_worst_class(tiny_dataset_dir: str, tmp_path: Path) -> None:
    plan, model_dir = _trained(tiny_dataset_dir, tmp_path, [{"metric": "test_min_class_recall", "min": 1.01}])
    with pytest.raises(GateFailure, match=r"test_min_class_recall = .* \(needs >= 1.01\) \(worst classes: precision '"):
        evaluate_model(plan, model_dir, tiny_dataset_dir, str(tmp_path / "eval"))
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["worst_class"]["recall"] in report["classes"]


def test_failed_gate_can_be_recorded_without_failing(tiny_dataset_dir: str, tmp_path: Path) -> None:
    plan, model_dir = _trained(
        tiny_dataset_dir, tmp_path, [{"metric": "test_accuracy", "min": 1.01}], fail_on_gate=False
    )
    assert not evaluate_model(plan, model_dir, tiny_dataset_dir, str(tmp_path / "eval")).passed


def test_every_requirement_is_measured_and_a_gate_on_a_per_class_requirement_checks_that_class(
    tiny_dataset_dir: str, tmp_path: Path
) -> None:
    requirements = [
        {"id": "REQ-ACC", "text": "the model is right on most images", "metric": "test_accuracy", "min": 0.0},
        {"id": "REQ-REC", "text": "circles are found", "metric": "test_recall", "class_name": "circle", "min": 1.01},
        {"id": "REQ-LAT", "text": "fast enough", "metric": "model_fp32_latency_p95_ms", "max": 50.0},
    ]
    gates = [{"requirement": "REQ-REC"}]
    plan, model_dir = _trained(tiny_dataset_dir, tmp_path, gates, fail_on_gate=False, requirements=requirements)
    result = evaluate_model(plan, model_dir, tiny_dataset_dir, str(tmp_path / "eval"))
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    recall = report["per_class"]["circle"]["recall"]
    assert result.metrics["test_recall.circle"] == recall  # logged with the step's metrics
    gate = {"metric": "test_recall.circle", "value": recall, "min": 1.01, "max": None, "passed": False}
    assert report["gates"] == [gate]
    verdicts = {record["id"]: (record["value"], record["passed"]) for record in report["requirements"]}
    assert verdicts == {
        "REQ-ACC": (report["accuracy"], True),
        "REQ-REC": (recall, False),
        "REQ-LAT": (None, None),  # not an evaluation figure: the export measures it
    }
    assert [record["split"] for record in report["requirements"]] == ["test", "test", None]
    assert not result.passed


def test_a_requirement_on_a_class_the_model_does_not_know_names_the_requirement(
    tiny_dataset_dir: str, tmp_path: Path
) -> None:
    requirements = [{"id": "R1", "text": "t", "metric": "test_recall", "class_name": "hexagon", "min": 0.5}]
    plan, model_dir = _trained(tiny_dataset_dir, tmp_path, [], requirements=requirements)
    with pytest.raises(ValueError, match=r"requirements\[0\]\.class_name: 'hexagon' is not a class of the model"):
        evaluate_model(plan, model_dir, tiny_dataset_dir, str(tmp_path / "eval"))
