"""model.detector.ensemble.overrides (rooivalk.plan.detector_members): each member is the plan's detector
with its seed, budget share, training overrides and own score / NMS / max_detections post-process,
validated as a plan of its own, its problems named under model.detector.ensemble.overrides[k]; keys the
members share (the rest of model, data, checkpoints, the budget) are refused with their path; one
override per member."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rooivalk.plan import DetectorSpec, Plan, PlanError, detector_member_plan, read_plan_file, validate_plan

PLANS = Path(__file__).resolve().parents[3] / "pipelines" / "plans"
WHERE = "model.detector.ensemble.overrides"
ONLY = (
    "member overrides training. keys and its own post-process (model.detector.score_threshold, nms_iou, "
    "max_detections) only"
)


def detection(overrides: list[dict[str, Any]] | None, **ensemble: Any) -> dict[str, Any]:
    raw = read_plan_file(PLANS / "detection.yaml")  # seed 42, budget_seconds 240, pretrained (schedule auto)
    raw["model"]["detector"]["ensemble"] = {"members": len(overrides or [{}, {}]), "overrides": overrides, **ensemble}
    return raw


def problems(raw: dict[str, Any]) -> str:
    with pytest.raises(PlanError) as caught:
        validate_plan(raw)
    return str(caught.value)


def test_members_are_the_plan_with_their_seed_budget_share_and_overrides() -> None:
    plan = validate_plan(detection([{}, {"training.detection_augment.strength": 0.5}, {"training.seed": 7}]))
    first, second, third = (detector_member_plan(plan, k) for k in range(3))
    assert [m.training.seed for m in (first, second, third)] == [42, 43, 7]  # an overridden seed wins
    assert {m.training.budget_seconds for m in (first, second, third)} == {80.0}
    assert [m.training.detection_augment.strength for m in (first, second, third) if m.training.detection_augment] == [
        1.0,
        0.5,
        1.0,
    ]
    # Each member is a detector of its own: no ensemble (its model.json says so).
    assert all(m.single_model.detector and m.single_model.detector.ensemble is None for m in (first, second, third))
    # Member 0 without overrides is the plan's detector, but for the budget share.
    assert first.training.model_dump(exclude={"budget_seconds"}) == plan.training.model_dump(exclude={"budget_seconds"})
    # Without overrides the members still differ by seed.
    seeds = validate_plan(detection(None))
    assert [detector_member_plan(seeds, k).training.seed for k in range(2)] == [42, 43]


def test_a_member_may_post_process_its_own_boxes() -> None:
    own = {"model.detector.score_threshold": 0.2, "model.detector.nms_iou": 0.45, "model.detector.max_detections": 30}
    plan = validate_plan(detection([{"model.detector.nms_iou": 0.5}, own, {}]))
    detector = plan.single_model.detector
    assert detector is not None
    for k in range(3):
        member = detector_member_plan(plan, k).single_model.detector
        assert member == detector.member(k)  # what the member's plan says is what its Detector is built with
    settings = [(d.score_threshold, d.nms_iou, d.max_detections) for d in map(detector.member, range(3))]
    assert settings == [(0.05, 0.5, 100), (0.2, 0.45, 30), (0.05, 0.6, 100)]
    assert (detector.score_threshold, detector.nms_iou, detector.max_detections) == (0.05, 0.6, 100)  # the fused
    assert detector.member(1).ensemble is None
    assert DetectorSpec().member(0) == DetectorSpec()  # no ensemble: the spec itself
    message = problems(detection([{}, {"model.detector.score_threshold": 1.5}]))
    assert f"{WHERE}[1].model.detector.score_threshold: Input should be less than 1" in message
    # Two members that differ only in their post-process would train the same network twice.
    message = problems(detection([{"training.seed": 1}, {"training.seed": 1, "model.detector.score_threshold": 0.2}]))
    assert f"{WHERE}[1]: the same plan as member 0 (seed included, post-process aside)" in message
    # The plan's own threshold, set where every member sets its own, would apply to none.
    raw = detection([{"model.detector.nms_iou": 0.5}, {"model.detector.nms_iou": 0.4}])
    raw["model"]["detector"]["nms_iou"] = 0.7
    assert "model.detector.nms_iou: every member of model.detector.ensemble sets its own" in problems(raw)
    raw["model"]["detector"]["nms_iou"] = 0.6  # the default: the plan sets nothing the members replace
    validate_plan(raw)
    raw["model"]["detector"] |= {"max_detections": 40, "nms_iou": 0.7}  # max_detections caps the fused boxes
    raw["model"]["detector"]["ensemble"]["overrides"] = [{"model.detector.max_detections": 50}] * 2
    validate_plan(raw)


def test_the_overrides_survive_the_pipeline_parameter() -> None:
    plan = validate_plan(detection([{}, {"training.detection_augment.strength": 0.5}]))
    again = Plan.model_validate(plan.to_parameter())
    assert again.digest() == plan.digest()
    member = detector_member_plan(again, 1)
    assert member.training.detection_augment is not None
    assert member.training.detection_augment.strength == 0.5


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        ("data.source", "other", ONLY),
        ("export.precisions", ["fp32"], ONLY),
        ("model.architecture", "fcos_resnet18", ONLY),
        ("model.pretrained", None, ONLY),
        ("model.detector.input_height", 320, ONLY),
        ("model.detector", {"score_threshold": 0.1}, ONLY),  # the three keys by their own paths only
        ("model.detector.operating_threshold", 0.3, "model.detector.operating_threshold applies to them"),
        ("model.detector.ensemble.members", 2, ONLY),
        ("model.num_classes", 3, ONLY),
        ("training", {"lr": 0.1}, ONLY),
        ("training.checkpoint.uri", "/tmp/x", "members share training.checkpoint"),
        ("training.budget_seconds", 60, "members share training.budget_seconds"),
        ("training.distributed.nproc_per_node", 2, "members share training.distributed"),
    ],
)
def test_an_override_of_what_members_share_is_refused_with_its_path(path: str, value: Any, reason: str) -> None:
    message = problems(detection([{}, {path: value}]))
    assert f"{WHERE}[1].{path}: " in message
    assert reason in message


def test_a_members_bad_value_is_named_by_its_member_and_path() -> None:
    message = problems(detection([{}, {"training.detection_augment.strength": -1}]))
    assert f"{WHERE}[1].training.detection_augment.strength: Input should be greater than or equal to 0" in message
    message = problems(detection([{"training.detection_augment.hflip": 0.2}, {"training.optimizer.nmae": "adam"}]))
    assert f"{WHERE}[1].training.optimizer.nmae: unknown key" in message
    assert f"{WHERE}[0]" not in message
    # A key the member's own plan refuses (pretrained: schedule auto sets the LRs), named by the member.
    assert f"{WHERE}[1].training.lr: model.pretrained is set" in problems(detection([{}, {"training.lr": 0.01}]))
    message = problems(detection([{}, {"training.auto.head_epochs": 0}]))
    assert f"{WHERE}[1].training.auto.head_epochs: Input should be greater than or equal to 1" in message
    # A member that does not validate is refused, named, when training builds it from a plan parameter.
    plan = Plan.model_validate(detection([{}, {"training.detection_augment.strength": -1}]))
    with pytest.raises(PlanError, match=r"overrides\[1\]"):
        detector_member_plan(plan, 1)


def test_one_override_per_member_and_no_two_members_alike() -> None:
    assert "overrides: 3 given for 2 members" in problems(detection([{}, {}, {}], members=2))
    message = problems(detection([{}, {"training.seed": 42}]))  # member 0's seed: the same detector twice
    assert f"{WHERE}[1]: the same plan as member 0" in message
    # The plan's own problems are its, not repeated for every member.
    raw = detection([{}, {"training.detection_augment.strength": 0.5}])
    raw["training"]["mix"] = {"mixup_alpha": 0.2}
    message = problems(raw)
    assert "training.mix.mixup_alpha" in message
    assert WHERE not in message
