"""Detector plans: the keys that apply to a detector are honoured, the others refused by `rooivalk
validate` with their path (rooivalk.plan.detection, model_keys, techniques)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from rooivalk.plan import PlanError, validate_plan

REPO = Path(__file__).resolve().parents[3]
DETECTION = REPO / "pipelines" / "plans" / "detection.yaml"
SIGN_LANGUAGE = REPO / "pipelines" / "plans" / "sign_language.yaml"


def detection_plan(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(DETECTION.read_text())
    for path, value in changes.items():
        node = raw
        *parents, leaf = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return raw


def problems(raw: dict[str, Any]) -> list[str]:
    try:
        validate_plan(copy.deepcopy(raw), origin="plan.yaml")
    except PlanError as error:
        return [line.strip() for line in str(error).splitlines()[1:]] or [str(error)]
    return []


def test_the_detection_plan_is_valid_and_stops_on_map50() -> None:
    assert problems(detection_plan()) == []
    raw = detection_plan()
    del raw["training"]["early_stopping"]["monitor"]
    plan = validate_plan(raw, origin="plan.yaml")
    assert plan.training.early_stopping.monitor == "val_map50"  # a detector's default, not val_accuracy


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"data__image_size": 32}, "data.image_size: image readers resize images; data.format yolo indexes images"),
        ({"data__channels": 3}, "data.channels:"),
        ({"data__max_samples_per_class": 5}, "data.max_samples_per_class: applies to image classification formats"),
        ({"data__label": "y"}, "data.label: applies to sequences and table columns"),
        ({"model__input_size": 320}, "model.input_size: a detector's input is model.detector.input_height"),
        ({"model__family": "timm", "model__detector": None}, "model.family: data.format yolo holds boxes"),
        ({"training__augment": {"fog": 0.2}}, "training.augment.fog: image augmentation does not apply"),
        ({"training__mix": {"mixup_alpha": 0.2}}, "training.mix.mixup_alpha: Mixup/CutMix are image techniques"),
        ({"training__loss": {"label_smoothing": 0.2}}, "training.loss.label_smoothing: the classification loss"),
        ({"training__early_stopping": {"monitor": "val_accuracy"}}, "unknown metric 'val_accuracy'"),
        (
            {"training__early_stopping": {"monitor": "val_map50", "mode": "min"}},
            "training.early_stopping.mode: mode min contradicts monitor val_map50",
        ),
        ({"training__distributed": {"nproc_per_node": 2}}, "training.distributed.nproc_per_node: detector models"),
        ({"training__channels_last": False}, "training.channels_last:"),
        (
            {"training__distillation": {"teacher": "runs/teacher/model"}},
            "training.distillation.teacher: a detector trains on its own losses",
        ),
        (
            {"data__simulate": {"kind": "shapes", "count": 50, "num_classes": 5}},
            "data.simulate.num_classes: applies to kind sign_language, not shapes",
        ),
        (
            {"data__simulate": {"kind": "sign_language", "count": 50}},
            "data.simulate.kind: sign_language writes data.format sequences, not yolo",
        ),
    ],
)
def test_keys_a_detector_cannot_honour_are_refused_with_their_path(changes: dict[str, Any], expected: str) -> None:
    found = problems(detection_plan(**changes))
    assert any(expected in line for line in found), found


def test_detector_keys_are_refused_on_other_models() -> None:
    raw: dict[str, Any] = yaml.safe_load(SIGN_LANGUAGE.read_text())
    raw["model"]["detector"] = {"input_height": 64}
    raw["training"]["detection_augment"] = {"mosaic": 0.5}
    found = problems(raw)
    assert any(line.startswith("model.detector: applies to family detector, not rnn") for line in found), found
    assert any(line.startswith("training.detection_augment.mosaic: box-aware augmentation") for line in found), found


@pytest.mark.parametrize(
    ("detector", "expected"),
    [
        ({"input_height": 100}, "multiple of 32"),
        ({"fpn_channels": 96 + 16}, "multiple of 32"),
        ({"fpn_channels": 32}, "greater than or equal to 64"),
        ({"nms_iou": 0}, "greater than 0"),
    ],
)
def test_detector_settings_are_checked(detector: dict[str, Any], expected: str) -> None:
    raw = detection_plan()
    raw["model"]["detector"] = detector
    assert any(expected in line for line in problems(raw))


def test_a_reversed_multi_scale_range_is_refused() -> None:
    raw = detection_plan()
    raw["training"]["detection_augment"]["multi_scale"] = [1.2, 0.8]
    assert any("multi_scale needs 0 < low <= high" in line for line in problems(raw))


def test_detector_calibration_and_tensorrt_keys_are_accepted_and_temperature_images_is_a_detectors() -> None:
    raw = detection_plan()
    raw["export"] = {"temperature_scaling": True, "temperature_images": 200, "targets": ["onnxruntime", "tensorrt"]}
    assert problems(raw) == []
    other: dict[str, Any] = yaml.safe_load(SIGN_LANGUAGE.read_text())
    other.setdefault("export", {})["temperature_images"] = 200
    assert any(line.startswith("export.temperature_images: a classifier's") for line in problems(other))
    raw["export"]["temperature_scaling"] = None  # a detector's default: no temperatures, so no image count
    assert any(line.startswith("export.temperature_images: a detector fits") for line in problems(raw))


def test_an_ensemble_is_a_detectors_with_one_weight_per_member_and_no_tta() -> None:
    raw = detection_plan()
    raw["model"]["detector"]["ensemble"] = {"members": 2, "weights": [2.0, 1.0]}
    assert problems(raw) == []
    raw["model"]["detector"]["ensemble"]["weights"] = [1.0]
    assert any("weights: 1 given for 2 members" in line for line in problems(raw))
    raw["model"]["detector"]["ensemble"]["weights"] = [1.0, 0.0]
    assert any("weights must be > 0" in line for line in problems(raw))
    raw["model"]["detector"]["ensemble"] = {"members": 1}
    assert any("model.detector.ensemble.members" in line for line in problems(raw))
    raw["model"]["detector"]["ensemble"] = {"members": 3}
    raw["evaluation"]["tta"] = {"hflip": True}
    assert any(
        line.startswith("evaluation.tta: test-time augmentation of a model.detector.ensemble") for line in problems(raw)
    )


def test_tta_is_a_detectors() -> None:
    raw = detection_plan()
    raw["evaluation"]["tta"] = {"rotations": [0, 90], "scales": [0.9, 1.0]}
    assert problems(raw) == []
    other: dict[str, Any] = yaml.safe_load(SIGN_LANGUAGE.read_text())
    other["evaluation"] = {"tta": {"hflip": True}}
    assert any(line.startswith("evaluation.tta: test-time augmentation") for line in problems(other))


def test_a_stages_augment_strength_needs_a_detector_with_detection_augment() -> None:
    stage = {
        "name": "all",
        "epochs": 2,
        "train": ["all"],
        "lr": {"head": 0.001, "backbone": 0.001},
        "augment_strength": 0.25,
    }
    raw = detection_plan()
    raw["training"]["budget_seconds"] = None
    raw["training"]["stages"] = [stage]
    assert problems(raw) == []
    raw["training"]["detection_augment"] = None
    assert any(
        "training.stages.0.augment_strength: training.detection_augment is null" in line for line in problems(raw)
    )
    other: dict[str, Any] = yaml.safe_load(SIGN_LANGUAGE.read_text())
    other["training"]["stages"][0]["augment_strength"] = 0.5
    assert any(line.startswith("training.stages.0.augment_strength: box-aware") for line in problems(other))


@pytest.mark.parametrize(
    ("section", "values", "expected"),
    [
        ("model", {"drop_rate": 0.5}, "model.drop_rate: the detector has no dropout"),
        ("monitoring", {"reference_uri": "runs/ref"}, "monitoring.reference_uri: drift monitoring of detectors"),
        ("monitoring", {"drift_share": 0.3}, "monitoring.drift_share: drift monitoring of detectors"),
        ("export", {"quantization": {"source": "reference"}}, "export.quantization.source: a detector has no"),
    ],
)
def test_what_a_detector_plan_lacks_is_refused(section: str, values: dict[str, Any], expected: str) -> None:
    raw = detection_plan()
    raw.setdefault(section, {}).update(values)
    found = problems(raw)
    assert any(line.startswith(expected) for line in found), found
