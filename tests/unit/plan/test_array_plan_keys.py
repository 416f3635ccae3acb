"""Sequence and table plans: the data, model and training keys that apply to them are honoured, the
others refused by `rooivalk validate` with their path (rooivalk.plan.data, model_keys, techniques)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from rooivalk.plan import PlanError, validate_plan

REPO = Path(__file__).resolve().parents[3]
SIGN_LANGUAGE = REPO / "pipelines" / "plans" / "sign_language.yaml"


def sequences_plan(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(SIGN_LANGUAGE.read_text())
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
        return [line.strip() for line in str(error).splitlines()[1:]]
    return []


def test_the_sign_language_plan_is_valid() -> None:
    assert problems(sequences_plan()) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"data__image_size": 32}, "data.image_size: image readers resize images; data.format sequences has none"),
        ({"data__channels": 3}, "data.channels: image readers set channels"),
        ({"data__categorical": ["a"]}, "data.categorical: applies to data.format table"),
        ({"training__bn_frozen": "train"}, "training.bn_frozen: rnn models have no BatchNorm"),
        ({"export__targets": ["onnxruntime", "tensorrt"]}, "export.targets: tensorrt builds image models"),
        ({"data__simulate": {"kind": "sign_language", "count": 10}}, "data.simulate.count: 10 is below num_classes 26"),
        ({"model__input_size": 64}, "model.input_size: rnn models take the data's features, not images"),
        ({"model__family": "mlp", "model__architecture": "64-32"}, "model.family: mlp models read data.format table"),
        ({"training__channels_last": False}, "training.channels_last: channels_last sets the memory format"),
        ({"training__augment": {"hflip": 0.2}}, "training.augment.hflip: image augmentation does not apply to rnn"),
        ({"training__distributed": {"nproc_per_node": 2}}, "training.distributed.nproc_per_node: rnn models train"),
    ],
)
def test_keys_that_do_not_apply_to_a_sequence_model_are_refused(changes: dict[str, Any], expected: str) -> None:
    found = problems(sequences_plan(**changes))
    assert any(line.startswith(expected) for line in found), found


def test_sequence_keys_are_refused_for_an_image_model() -> None:
    raw = {
        "name": "p",
        "data": {"source": "/data", "format": "image_folder", "label": "y"},
        "model": {"architecture": "resnet18", "num_features": 3},
        "training": {
            "sequence_augment": {},
            "stages": [
                {
                    "name": "s",
                    "epochs": 1,
                    "train": ["all"],
                    "lr": {"spread": [1e-3, 1e-3]},
                    "sequence_augment_probability": 0.3,
                }
            ],
        },
    }
    found = problems(raw)
    assert "data.label: applies to sequences and table columns (an NPZ source's labels are y)" in found
    assert "model.num_features: timm models (image task) have a fixed input" in found
    assert any(
        line.startswith("training.sequence_augment: sequence augmentation applies to sequence models") for line in found
    )
    assert any(
        line.startswith("training.stages.0.sequence_augment_probability: sequence augmentation") for line in found
    )


def test_a_stage_probability_needs_an_augmentation_and_npz_sources_take_no_column_keys() -> None:
    raw = sequences_plan(training__sequence_augment=None)
    assert problems(raw) == [
        "training.stages.1.sequence_augment_probability: training.sequence_augment is null: there is no "
        "augmentation whose probability a stage could set"
    ]
    npz = sequences_plan(data__source="/data/signs.npz", data__label="word", data__features=["x0"])
    del npz["data"]["simulate"]
    npz["data"]["sequence"] = {"length": 30, "step": "frame"}
    assert problems(npz) == [
        "data.label: applies to sequences and table columns (an NPZ source's labels are y)",
        "data.features: applies to sequences and table columns (an NPZ source's are X)",
        "data.sequence.step: applies to data.format sequences (CSV or Parquet for step)",
    ]


def test_a_stage_given_its_default_optimizer_or_scheduler_is_accepted() -> None:
    """Regression: an optional section given with its defaults counts as set; a stage's optimizer is honoured."""
    stage = {"name": "s", "epochs": 1, "train": ["all"], "lr": {"spread": [1e-3, 1e-3]}}
    raw = {
        "name": "p",
        "data": {"source": "/data", "format": "image_folder"},
        "model": {"architecture": "resnet18"},
        "training": {"stages": [{**stage, "optimizer": {"name": "adamw"}, "scheduler": {"name": "cosine"}}]},
    }
    assert problems(raw) == []


def test_an_image_family_cannot_read_sequences_and_simulators_match_formats() -> None:
    found = problems(sequences_plan(model__family="timm", model__architecture="resnet18"))
    assert "model.family: data.format sequences is read by family rnn, not timm" in found
    found = problems(sequences_plan(data__simulate={"kind": "attribution", "count": 100}))
    assert found == ["data.simulate.kind: attribution writes data.format table, not sequences"]
    found = problems(sequences_plan(data__simulate={"kind": "sign_language", "image_size": 64}))
    assert found == ["data.simulate.image_size: applies to kind counter_drone, not sign_language"]


def test_a_table_plan_with_an_mlp_is_valid() -> None:
    raw = {
        "name": "attribution",
        "data": {"source": "/data/a.csv", "format": "table", "categorical": ["rf_band"], "label": "threat"},
        "model": {"family": "mlp", "architecture": "256-128-64", "drop_rate": 0.3},
        "training": {"sequence_augment": {"noise_std": 0.1}},
    }
    assert problems(raw) == [
        "training.sequence_augment.noise_std: sequence augmentation applies to sequence models (family rnn), "
        "not mlp (table task)"
    ]
    del raw["training"]
    assert problems(raw) == []


COUNTER_DRONE = REPO / "pipelines" / "plans" / "counter_drone.yaml"


def test_the_attribution_section_is_checked_as_its_table_plan_under_its_own_paths() -> None:
    raw: dict[str, Any] = yaml.safe_load(COUNTER_DRONE.read_text())
    assert problems(raw) == []
    plan = validate_plan(copy.deepcopy(raw))
    table = plan.attribution_plan()
    assert (table.name, table.tracking.registered_model) == ("counter-drone-attribution", "counter-drone-attribution")
    assert table.data.format == "table"
    assert table.ensemble == plan.attribution.ensemble  # type: ignore[union-attr]
    raw["attribution"]["training"]["augment"] = {"fog": 0.2}
    raw["attribution"]["data"]["image_size"] = 32
    raw["attribution"]["export"]["models"] = {"rf": {"latency_budget_ms": 5}}
    assert problems(raw) == ["attribution: Value error, export.models: unknown model(s) ['rf']; "
                             "this plan's models are ['model']"]  # fmt: skip
    del raw["attribution"]["export"]["models"]
    raw["attribution"]["export"]["quantization"] = {"source": "reference"}
    assert problems(raw) == [
        "attribution.data.image_size: image readers resize images; data.format table has none",
        "attribution.training.augment.fog: image augmentation does not apply to mlp inputs (table task)",
        "attribution.export.quantization.source: the attribution model has no monitoring reference profile; "
        "calibrate on train",
    ]


def test_attribution_needs_sensors() -> None:
    raw = sequences_plan()
    raw["attribution"] = yaml.safe_load(COUNTER_DRONE.read_text())["attribution"]
    assert problems(raw) == [
        "<root>: Value error, 'attribution' is a step of the multi-sensor pipeline: it needs 'sensors'"
    ]
