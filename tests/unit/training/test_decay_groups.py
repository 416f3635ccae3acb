"""optimizer.decay_groups: weight decay on the named layer groups only (e.g. L2 on the dense head of a
recurrent model), everything else trained without it; a name the model lacks fails with the key's path."""

from __future__ import annotations

import pytest

from rooivalk.models.groups import layer_groups
from rooivalk.models.rnn import build_rnn
from rooivalk.plan import OptimizerSpec, StageLR, StageSpec, TrainingSpec
from rooivalk.training.engine.stage_entry import prepare_stage_optimizer
from rooivalk.training.engine.stages import model_stages, resolve_stages


def _decay_by_group(spec: OptimizerSpec) -> dict[str, set[float]]:
    model = build_rnn("lightweight", 6, 3)
    groups = layer_groups(model)
    (stage,) = resolve_stages([StageSpec(name="all", epochs=1, train=["all"], lr=StageLR(spread=(1e-3, 1e-3)))], groups)
    optimizer = prepare_stage_optimizer(model, groups, stage, None, spec, affine_early=False)
    decay: dict[str, set[float]] = {}
    for group in optimizer.param_groups:
        if any(p.ndim > 1 for p in group["params"]):  # weights; biases never decay
            decay.setdefault(group["group"], set()).add(group["weight_decay"])
    return decay


def test_only_the_named_groups_decay() -> None:
    assert _decay_by_group(OptimizerSpec(weight_decay=1e-4, decay_groups=["head"])) == {
        "recurrent": {0.0},
        "head": {1e-4},
    }
    assert _decay_by_group(OptimizerSpec(weight_decay=1e-4)) == {"recurrent": {1e-4}, "head": {1e-4}}


def test_an_unknown_group_is_refused_with_the_key_path() -> None:
    groups = layer_groups(build_rnn("lightweight", 6, 3))
    spec = TrainingSpec(epochs=1, optimizer={"decay_groups": ["dense"]})
    with pytest.raises(ValueError, match=r"training.optimizer.decay_groups: unknown layer group 'dense'"):
        model_stages(spec, False, groups)
