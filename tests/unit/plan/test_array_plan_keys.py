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
        ({"data__image_size": 32}, "data: Value error, image_size does not apply to data.format sequences"),
        ({"data__channels": 3}, "data: Value error, channels does not apply to data.format sequences"),
        ({"data__categorical": ["a"]}, "data: Value error, categorical does not apply to data.format sequences"),
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
    assert problems(raw) == ["data: Value error, label does not apply to data.format image_folder"]
    del raw["data"]["label"]
    found = problems(raw)
    assert "model.num_features: timm models (image task) have a fixed input" in found
    assert any(
        line.startswith("training.sequence_augment: sequence augmentation applies to sequence models") for line in found
    )
    assert any(
        line.startswith("training.stages.0.sequence_augment_probability: sequence augmentation") for line in found
    )


def test_an_image_family_cannot_read_sequences_and_simulators_match_formats() -> None:
    found = problems(sequences_plan(model__family="timm", model__architecture="resnet18"))
    assert "model.family: data.format sequences is read by family rnn, not timm" in found
    found = problems(sequences_plan(data__simulate={"kind": "attribution", "count": 100}))
    assert found == ["data: Value error, simulate.kind attribution writes data.format table, not sequences"]
    found = problems(sequences_plan(data__simulate={"kind": "sign_language", "image_size": 64}))
    assert found == ["data.simulate: Value error, image_size applies to kind counter_drone, not sign_language"]


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
