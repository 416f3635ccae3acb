"""The members of a `model.detector.ensemble`: each the plan's detector with its own seed, budget share and
`overrides` (training keys as `--set` takes them: augmentation strengths, learning rates, epochs, seeds;
and its own post-process: model.detector.score_threshold, nms_iou, max_detections).

Member k is the plan without the ensemble (a detector of its own), with training.seed + k (unless its
overrides set training.seed), training.budget_seconds / members, and then its overrides; it is validated
as a plan of its own (rooivalk.plan.loading.detector_member_plan), its problems named under
model.detector.ensemble.overrides[k]. The members are one ONNX graph side by side on one letterboxed input,
each slice post-processed by the bundle with that member's score / NMS / max_detections settings
(DetectorSpec.member) before their boxes fuse. So an override reaches training keys and those three:
everything else under `model` (architecture, pretrained weights, input size, pyramid, classes, and the
operating threshold and max_detections after fusion) and outside `training` (data, evaluation, export) is
the ensemble's, shared.
"""

from __future__ import annotations

from typing import Any

from rooivalk.plan.detection import MEMBER_POSTPROCESS, MEMBER_POSTPROCESS_PATHS
from rooivalk.plan.variants import member_path_problems

OVERRIDES_PATH = "model.detector.ensemble.overrides"
_ROOTS = ("training",)
_OUTSIDE = (
    "a detector ensemble's member overrides training. keys and its own post-process (model.detector."
    "score_threshold, nms_iou, max_detections) only: the members are one graph side by side on one letterboxed "
    "input (model.architecture, model.pretrained, model.detector's input size and pyramid), predict the data's "
    "classes, and their fused boxes are the ensemble's (model.detector.operating_threshold applies to them, and "
    "the plan's max_detections caps them too); data, evaluation and export are the ensemble's"
)
# Training keys members share, with the reason an override is refused.
_SHARED = {
    "training.checkpoint": "members checkpoint under the plan's training.checkpoint.uri, in member_<k>",
    "training.budget_seconds": "each member trains an equal share, training.budget_seconds / members: give a "
    "member more or fewer epochs or stages instead",
    "training.distributed": "members train one after another in one process",
    "training.qat": "the export quantizes the members' one graph once, with one setting",
}


def override_problems(overrides: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Override paths a member may not set, named model.detector.ensemble.overrides[k].<path>."""
    training = [
        {path: value for path, value in member.items() if path not in MEMBER_POSTPROCESS_PATHS} for member in overrides
    ]
    return member_path_problems(training, OVERRIDES_PATH, _ROOTS, _OUTSIDE, _SHARED)


def member_values(plan: Any, member: int) -> dict[str, Any]:
    """What member `member` of the plan's (a Plan's) ensemble sets on the plan, as `--set` sets it: no
    ensemble, its seed and budget share, then its overrides (an overridden training.seed wins)."""
    ensemble = plan.model.detector.ensemble
    budget = plan.training.budget_seconds
    values: dict[str, Any] = {
        "model.detector.ensemble": None,
        "training.seed": plan.training.seed + member,
        "training.budget_seconds": None if budget is None else budget / ensemble.members,
    }
    return values | (ensemble.overrides[member] if ensemble.overrides is not None else {})


def trained_digest(member: Any, detector: Any) -> str:
    """The digest of what member plan `member` (a Plan) trains: its plan with the post-process set to the
    ensemble's `detector` (a DetectorSpec), so two members that differ only in post-process, which would
    train the same network, have the same digest."""
    spec = member.single_model
    shared = {key: getattr(detector, key) for key in MEMBER_POSTPROCESS}
    model = spec.model_copy(update={"detector": spec.detector.model_copy(update=shared)})
    return str(member.model_copy(update={"model": model}).digest())


def postprocess_problems(detector: Any) -> list[tuple[str, str]]:
    """The plan's own model.detector score_threshold / nms_iou, set but overridden by every member of its
    ensemble (`detector` a DetectorSpec): they would apply to none. max_detections always applies: it caps
    the fused boxes."""
    ensemble = detector.ensemble
    if ensemble is None or ensemble.overrides is None:
        return []
    problems = []
    for path, key in MEMBER_POSTPROCESS_PATHS.items():
        default = type(detector).model_fields[key].get_default()
        if key == "max_detections" or getattr(detector, key) == default:
            continue
        if all(path in member for member in ensemble.overrides):
            problems.append(
                (
                    path,
                    f"every member of model.detector.ensemble sets its own ({OVERRIDES_PATH}[k].{path}): this "
                    "one would apply to none; remove it, or a member's",
                )
            )
    return problems
