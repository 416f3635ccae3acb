"""`variants` (rooivalk.plan.variants): each member is the plan with its overrides, validated as a plan of its
own, its problems named under variants.members[k]; members may override model and training keys only, and
not those the members share (family, inputs, classes, checkpoints); weights one per member; refused with a
table ensemble, a search, cross-validation, and outside sequence, table and image classifier plans (an image
plan's members share its architecture and image input too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rooivalk.plan import PlanError, read_plan_file, validate_plan, variant_plans

PLANS = Path(__file__).resolve().parents[3] / "pipelines" / "plans"


def signs(members: list[dict[str, Any]], weights: list[float] | None = None) -> dict[str, Any]:
    raw = read_plan_file(PLANS / "sign_language.yaml")
    raw["variants"] = {"members": members, "weights": weights}
    return raw


def problems(raw: dict[str, Any]) -> str:
    with pytest.raises(PlanError) as caught:
        validate_plan(raw)
    return str(caught.value)


def test_members_are_the_plan_with_their_overrides() -> None:
    plan = validate_plan(signs([{}, {"training.seed": 1, "training.sequence_augment.probability": 0.8}]))
    first, second = variant_plans(plan)
    assert (first.training.seed, second.training.seed) == (0, 1)
    assert second.training.sequence_augment is not None
    assert second.training.sequence_augment.probability == 0.8
    assert first.variants is None
    assert second.variants is None
    assert first.model_dump(exclude={"variants"}) == plan.model_dump(exclude={"variants"})
    assert plan.variants is not None
    assert plan.variants.normalized_weights() == [0.5, 0.5]


def test_a_members_bad_value_is_named_by_its_member_and_path() -> None:
    message = problems(signs([{}, {"training.seed": 1}, {"training.seed": "x"}]))
    assert "variants.members[2].training.seed: Input should be a valid integer" in message
    message = problems(signs([{}, {"training.stages.7.epochs": 3}]))
    assert "variants.members[1]: --set training.stages.7.epochs: '7' is not an index" in message
    message = problems(signs([{}, {"training.optimizer.nmae": "adam"}]))
    assert "variants.members[1].training.optimizer.nmae: unknown key" in message


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        ("data.source", "other.parquet", "overrides keys under model. and training. only"),
        ("evaluation.gates", [], "overrides keys under model. and training. only"),
        ("export.precisions", ["fp32"], "overrides keys under model. and training. only"),
        ("name", "other", "overrides keys under model. and training. only"),
        ("model", {"family": "mlp"}, "overrides keys under model. and training. only"),
        ("model.family", "mlp", "members share model.family"),
        ("model.num_classes", 3, "members share model.num_classes"),
        ("model.num_features", 63, "members share model.num_features"),
        ("training.checkpoint.uri", "/tmp/x", "members share training.checkpoint"),
        ("training.qat", {}, "members share training.qat"),
    ],
)
def test_an_override_outside_a_members_own_keys_is_refused(path: str, value: Any, reason: str) -> None:
    message = problems(signs([{}, {path: value}]))
    assert f"variants.members[1].{path}: " in message
    assert reason in message


def test_member_count_weights_and_duplicates() -> None:
    assert "variants.members: List should have at least 2 items" in problems(signs([{}]))
    assert "variants.weights: 3 weights for 2 members" in problems(signs([{}, {"training.seed": 1}], [1, 2, 3]))
    assert "variants.weights.1: Input should be greater than 0" in problems(signs([{}, {"training.seed": 1}], [1, 0]))
    message = problems(signs([{}, {"training.seed": 1}, {"training.seed": 1}]))
    assert "variants.members[2]: the same plan as member 1" in message
    plan = validate_plan(signs([{}, {"training.seed": 1}], [1, 3]))
    assert plan.variants is not None
    assert plan.variants.normalized_weights() == [0.25, 0.75]


def test_refused_with_sections_it_does_not_compose_with() -> None:
    raw = read_plan_file(PLANS / "attribution.yaml")  # a table plan with the mlp + XGBoost ensemble
    raw["variants"] = {"members": [{}, {"training.seed": 1}]}
    assert "variants: not together with ensemble" in problems(raw)
    del raw["ensemble"]
    validate_plan(raw)  # the same table plan without its ensemble takes variants
    raw = signs([{}, {"training.seed": 1}])
    raw["evaluation"]["cross_validation"] = {"folds": 3}
    assert "variants: not together with evaluation.cross_validation" in problems(raw)
    raw = read_plan_file(PLANS / "sign_language_search.yaml")
    raw["variants"] = {"members": [{}, {"training.seed": 1}]}
    assert "search: a variant ensemble's members train one after another" in problems(raw)


@pytest.mark.parametrize("plan_file", ["detection.yaml", "counter_drone.yaml"])
def test_refused_outside_sequence_table_and_image_classifier_plans(plan_file: str) -> None:
    raw = read_plan_file(PLANS / plan_file)
    raw["variants"] = {"members": [{}, {"training.seed": 1}]}
    message = problems(raw)
    assert "variants: applies to sequence, table and image classifier plans" in message
    if plan_file == "detection.yaml":  # a detector's members differ in model.detector.ensemble.overrides
        assert "model.detector.ensemble.overrides" in message


def test_an_image_plans_members_share_its_architecture() -> None:
    raw = read_plan_file(PLANS / "fashion_finetune.yaml")
    raw["variants"] = {"members": [{}, {"training.seed": 1}]}
    validate_plan(raw)
    raw["variants"] = {"members": [{}, {"model.architecture": "resnet18"}]}
    assert "variants.members[1].model.architecture: members share model.architecture" in problems(raw)


def test_each_members_stages_are_resolved_on_its_own_model() -> None:
    from rooivalk.training.trainer import check_stages_against_model

    plan = validate_plan(signs([{}, {"model.architecture": "gru-8x1"}]))
    assert len(check_stages_against_model(plan)) == 4  # two stages of each member
    plan = validate_plan(signs([{}, {"model.architecture": "gru-x"}]))
    with pytest.raises(ValueError, match=r"variants\.members\[1\]: model\.architecture: 'gru-x' is not an rnn"):
        check_stages_against_model(plan)


def test_members_survive_the_pipeline_parameter() -> None:
    from rooivalk.plan import Plan

    plan = validate_plan(signs([{}, {"training.budget_seconds": None, "training.seed": 3}], [2, 1]))
    again = Plan.model_validate(plan.to_parameter())
    assert again.variants == plan.variants
    assert [member.digest() for member in variant_plans(again)] == [member.digest() for member in variant_plans(plan)]
