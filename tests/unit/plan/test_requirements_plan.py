"""`requirements:` in a plan: ids, criteria, and gates that reference them (rooivalk.plan.requirements)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from rooivalk.plan import PlanError, validate_plan


def _plan(requirements: list[dict[str, Any]], gates: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "name": "required",
        "data": {"source": "unused.parquet", "format": "sequences", "label": "label", "sequence": {"length": 16}},
        "model": {"family": "rnn", "architecture": "gru-16x1"},
        "requirements": requirements,
        "evaluation": {"gates": gates or []},
    }


ACCURACY = {"id": "REQ-ML-001", "text": "9 of 10 signs right", "metric": "test_accuracy", "min": 0.9}
RECALL = {"id": "REQ-ML-002", "text": "'hello' is found", "metric": "test_recall", "class_name": "hello", "min": 0.95}


def _refusal(raw: dict[str, Any]) -> str:
    with pytest.raises(PlanError) as error:
        validate_plan(copy.deepcopy(raw), origin="plan.yaml")
    return str(error.value)


def test_a_gate_naming_a_requirement_checks_its_criterion_and_the_plan_reads_back_the_same() -> None:
    plan = validate_plan(_plan([ACCURACY, RECALL], [{"requirement": "REQ-ML-002"}]))
    (gate,) = plan.evaluation.gates
    assert (gate.metric, gate.min, gate.max, gate.requirement) == ("test_recall.hello", 0.95, None, "REQ-ML-002")
    assert plan.requirements[1].criterion() == "test_recall.hello >= 0.95"
    assert plan.requirements[0].split == "test"
    dumped = plan.model_dump(mode="json")  # a pipeline parameter, plan.json: the gate as the user wrote it
    assert dumped["evaluation"]["gates"] == [{"requirement": "REQ-ML-002"}]
    assert validate_plan(dumped).digest() == plan.digest()
    dumped["requirements"][1]["min"] = 0.8  # edited and read again: the gate follows its requirement
    assert validate_plan(dumped).evaluation.gates[0].min == 0.8


def test_bad_requirements_and_gates_are_refused_naming_their_path() -> None:
    assert "evaluation.gates[0].requirement: unknown requirement id 'REQ-9'" in _refusal(
        _plan([ACCURACY], [{"requirement": "REQ-9"}])
    )
    assert "requirements[1].id: 'REQ-ML-001' is also requirements[0]" in _refusal(_plan([ACCURACY, ACCURACY]))
    conflicting = _plan([ACCURACY], [{"requirement": "REQ-ML-001", "min": 0.5}])
    assert "evaluation.gates.0: Value error, a gate naming requirement REQ-ML-001 takes its criterion from it" in (
        _refusal(conflicting)
    )
    assert "requirements.0.class_name" in _refusal(_plan([{**RECALL, "class_name": "drone (fixed/wing)"}]))
    assert "give min or max" in _refusal(_plan([{**ACCURACY, "min": None}]))
    assert "class_name needs a per-class figure" in _refusal(_plan([{**RECALL, "metric": "test_accuracy"}]))
    assert "requirements.0.id" in _refusal(_plan([{**ACCURACY, "id": "has space"}]))
    export_gate = _plan([ACCURACY])
    export_gate["export"] = {"gates": [{"requirement": "REQ-X"}]}
    assert "export.gates[0].requirement: unknown requirement id 'REQ-X'" in _refusal(export_gate)
    assert "a gate needs a metric" in _refusal(_plan([], [{"min": 0.5}]))
