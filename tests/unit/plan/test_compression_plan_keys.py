"""training.pruning and training.qat: refused, with their path and reason, where the phase cannot do what
the plan asks (rooivalk.plan.techniques): channel pruning of recurrent and state-space models, magnitude
pruning followed by QAT, a channel-pruned champion for a warm start, detectors and distributed runs."""

from __future__ import annotations

from typing import Any

import pytest

from rooivalk.plan import PlanError, validate_plan


def problems(raw: dict[str, Any]) -> list[str]:
    try:
        validate_plan(raw, origin="plan.yaml")
    except PlanError as error:
        return [line.strip() for line in str(error).splitlines()[1:]]
    return []


def single(family: str, architecture: str, data_format: str, training: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "p",
        "data": {"source": "/data", "format": data_format},
        "model": {"family": family, "architecture": architecture},
        "training": training,
    }


def multi(training: dict[str, Any], sensor: str, model: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "p",
        "data": {"source": "/data", "format": "multisensor"},
        "sensors": {sensor: {"model": model, "training": training}},
        "fusion": {"training": training},
    }


CHANNELS = {"pruning": {"method": "channels"}}


@pytest.mark.parametrize(
    ("raw", "family"),
    [
        (single("mlp", "256-128-64", "table", CHANNELS), "mlp"),
        (single("timm", "resnet18", "image_folder", CHANNELS), "timm"),
        (multi(CHANNELS, "rf", {"family": "rf_cnn_transformer", "architecture": "small"}), "rf and fusion"),
        (single("rnn", "standard", "sequences", {"pruning": {"amount": 0.3}}), "rnn, magnitude"),
    ],
)
def test_pruning_is_accepted_where_it_applies(raw: dict[str, Any], family: str) -> None:
    assert problems(raw) == [], family


def test_channel_pruning_of_recurrent_and_state_space_models_is_refused() -> None:
    (line,) = problems(single("rnn", "standard", "sequences", CHANNELS))
    assert line.startswith("training.pruning.method: torch-pruning cannot trace the GRU/LSTM layers of rnn models")
    radar = {"family": "radar_sequence", "architecture": "kinematic_ssm"}
    (line,) = problems(multi(CHANNELS, "radar", radar))
    assert line.startswith("sensors.radar.training.pruning.method: torch-pruning cannot trace radar_sequence's GRU")


def test_qat_after_magnitude_pruning_is_refused_and_after_channel_pruning_accepted() -> None:
    training = {"pruning": {"amount": 0.5}, "qat": {"epochs": 2}}
    (line,) = problems(single("mlp", "256-128-64", "table", training))
    assert line == (
        "training.qat.epochs: QAT fine-tunes every weight without magnitude pruning's masks, so the weights "
        "pruning zeroed would grow back; QAT follows pruning.method channels"
    )
    training["pruning"] = {"method": "channels"}
    assert problems(single("mlp", "256-128-64", "table", training)) == []


def test_a_warm_start_cannot_load_a_channel_pruned_champion() -> None:
    raw = {**single("timm", "resnet18", "image_folder", CHANNELS), "retraining": {"warm_start": True}}
    (line,) = problems(raw)
    assert line.startswith("training.pruning.method: retraining.warm_start loads the champion's weights")
    raw["training"] = {"pruning": {"method": "magnitude", "amount": 0.3}}  # the same shapes: accepted
    assert problems(raw) == []


def test_pruning_is_refused_for_distributed_training() -> None:
    raw = single("timm", "resnet18", "image_folder", {"pruning": {"amount": 0.3}, "distributed": {"nproc_per_node": 2}})
    assert problems(raw) == [
        "training.pruning.amount: pruning runs in one process after the stages; training.distributed launches several"
    ]
