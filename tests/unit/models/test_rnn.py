"""The recurrent sequence classifier: shapes, length pooling, presets' sizes, layer groups."""

from __future__ import annotations

import pytest
import torch

from rooivalk.models import layer_groups
from rooivalk.models.rnn import (
    PRESETS,
    RNNClassifier,
    RNNSettings,
    build_rnn,
    dense_parameter_names,
    parameter_count,
)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_gives_one_logit_row_per_sequence(preset: str) -> None:
    model = build_rnn(preset, num_features=5, num_classes=3).eval()
    sequences = torch.randn(4, 7, 5)
    assert model(sequences).shape == (4, 3)
    assert model(sequences, torch.tensor([7, 3, 1, 5])).shape == (4, 3)
    assert model.train()(sequences).shape == (4, 3)


@pytest.mark.parametrize(
    ("cell", "layers", "bidirectional_first"),
    [("lstm", 1, True), ("gru", 2, True), ("lstm", 3, True), ("gru", 2, False)],
)
def test_padding_does_not_change_the_logits(cell: str, layers: int, bidirectional_first: bool) -> None:
    torch.manual_seed(0)
    model = RNNClassifier(6, 4, cell, hidden=8, layers=layers, bidirectional_first=bidirectional_first).eval()
    lengths = torch.tensor([9, 4, 1, 6])
    padded = torch.randn(4, 9, 6)
    for row, length in enumerate(lengths.tolist()):
        padded[row, length:] = 100.0  # garbage after the end, as any padding scheme may leave
    logits = model(padded, lengths)
    for row, length in enumerate(lengths.tolist()):
        alone = model(padded[row : row + 1, :length])  # the unpadded sequence, no lengths
        torch.testing.assert_close(logits[row : row + 1], alone, rtol=1e-5, atol=1e-5)
    # Without lengths the last step is pooled, so the garbage does count.
    assert not torch.allclose(model(padded)[1], logits[1])


def test_preset_parameter_counts_for_hand_landmarks() -> None:
    # 30 frames x 63 features (21 landmarks x xyz), 26 classes: the table in rooivalk.models.rnn.
    counts = {name: parameter_count(build_rnn(name, 63, 26)) for name in PRESETS}
    assert counts == {"lightweight": 105_754, "standard": 336_154, "deep": 2_044_698}


def test_layer_groups_and_the_dense_weights() -> None:
    model = build_rnn({"cell": "gru", "hidden": 8, "layers": 2, "dense": 16}, 5, 3)
    groups = layer_groups(model)
    assert [g.name for g in groups] == ["recurrent", "head"]
    assert all(n.startswith(("recurrent.", "first_backward.")) for n in groups[0].param_names)
    assert dense_parameter_names(model) == ["head.0.weight", "head.3.weight"]
    classifier = model.get_classifier()
    assert isinstance(classifier, torch.nn.Linear)
    assert classifier.out_features == 3


def test_settings_are_checked() -> None:
    assert isinstance(build_rnn(RNNSettings(cell="lstm", hidden=4, layers=1), 2, 2), RNNClassifier)
    with pytest.raises(ValueError, match="preset 'huge' is unknown"):
        build_rnn("huge", 2, 2)
    with pytest.raises(ValueError, match=r"\['units'\] are unknown"):
        build_rnn({"units": 4}, 2, 2)
    with pytest.raises(ValueError, match="cell: 'rnn'"):
        build_rnn({"cell": "rnn"}, 2, 2)
