"""`variants`: an ensemble of a sequence, table or image classifier plan's variants (seeds, augmentation
strengths, learning rates; architectures for sequence and table plans), their class probabilities averaged.

Each member is the plan with its own overrides, given as `--set` takes them (dotted path -> value; `{}`
is the plan as it is), validated as a plan of its own (rooivalk.plan.loading.variant_plans). Members
take the same data, inputs and classes and are evaluated, exported and tracked as one model, so an
override may touch `model` and `training` keys only, and not those that fix the inputs, the classes or
where checkpoints go. An image plan's members also share model.architecture and model.pretrained: the
ensemble's one graph takes one image input (size, channels, normalization), and those come with the
architecture and its weights. Training: rooivalk.training.variant_training (image plans:
rooivalk.training.image_variant_training); one ONNX graph of the weighted probabilities:
rooivalk.export.ensemble_onnx.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, PositiveFloat

from rooivalk.plan.base import Strict
from rooivalk.plan.data import ARRAY_FORMATS, DETECTION_FORMATS

VARIANT_FAMILIES = ("rnn", "mlp")
ARRAY_ONLY_FAMILIES = ("rnn", "mlp")  # not image families
_ROOTS = ("model", "training")  # what an override may reach
# Keys under those roots that members must share, with the reason an override is refused.
_SHARED = {
    "model.family": "members are one family: the ensemble's graph and bundle take one kind of input",
    "model.num_features": "members take the same inputs (the dataset's features)",
    "model.num_classes": "members predict the same classes (the dataset's)",
    "training.checkpoint": "members checkpoint under the plan's training.checkpoint.uri, in member_<k>",
    "training.distributed": "members train one after another in one process",
    "training.qat": "the export quantizes the merged graph once, with one setting: set training.qat for all",
}
# What an image plan's members share besides: the one graph's image input comes with the architecture.
_IMAGE_SHARED = {
    "model.architecture": "an image ensemble is one graph of one image input (size, channels, mean/std), which "
    "come with the architecture: members vary seeds and training keys",
    "model.pretrained": "an image ensemble is one graph of one image input, whose channels and normalization "
    "come with the architecture and its pretrained weights: members vary seeds and training keys",
    "model.input_size": "an image ensemble is one graph of one image input size",
}


def is_image_plan(plan: Any) -> bool:
    """A single-model image classifier plan (not a sequence, table, detector or multi-sensor plan)."""
    return (
        plan.model is not None
        and plan.sensors is None
        and plan.data.format not in (*ARRAY_FORMATS, *DETECTION_FORMATS, "multisensor")
        and plan.model.family not in ARRAY_ONLY_FAMILIES
    )


class VariantsSpec(Strict):
    members: list[dict[str, Any]] = Field(
        min_length=2,
        description="each member's plan overrides as --set takes them (dotted path -> value); {}: the plan as is",
    )
    weights: list[PositiveFloat] | None = Field(
        None, description="one positive weight per member (normalized to sum 1); null: equal weights"
    )

    def normalized_weights(self) -> list[float]:
        """One weight per member, summing to 1."""
        given = self.weights or [1.0] * len(self.members)
        total = float(sum(given))
        return [float(weight) / total for weight in given]


def override_problems(members: list[dict[str, Any]], image: bool = False) -> list[tuple[str, str]]:
    """Overrides that reach outside a member's own model and training keys, with their path (`image`: of an
    image classifier plan, whose members also share its architecture and input)."""
    outside = (
        "a member overrides keys under model. and training. only: members share the data, inputs and classes, "
        "and are evaluated, exported and tracked as one model"
    )
    shared = {**_SHARED, **(_IMAGE_SHARED if image else {})}
    return member_path_problems(members, "variants.members", _ROOTS, outside, shared)


def member_path_problems(
    members: list[dict[str, Any]], where: str, roots: tuple[str, ...], outside: str, shared: dict[str, str]
) -> list[tuple[str, str]]:
    """Each override path of each member (`where`[k].path) that is not under one of `roots` (`outside`: why),
    or that is, or lies under, a key of `shared` (key -> why members share it). Shared by a plan's variants
    and a detector ensemble's member overrides (rooivalk.plan.detector_members)."""
    problems = []
    for k, overrides in enumerate(members):
        for path in overrides:
            at = f"{where}[{k}].{path}"
            if path.split(".")[0] not in roots or path in roots:
                problems.append((at, outside))
                continue
            key = next((key for key in shared if path == key or path.startswith(f"{key}.")), None)
            if key is not None:
                problems.append((at, f"members share {key}: {shared[key]}"))
    return problems


def section_problems(plan: Any) -> list[tuple[str, str]]:
    """What the rest of the plan sets that a variant ensemble would not honour (plan: a Plan)."""
    spec: VariantsSpec = plan.variants
    problems = []
    if spec.weights is not None and len(spec.weights) != len(spec.members):
        problems.append(
            ("variants.weights", f"{len(spec.weights)} weights for {len(spec.members)} members: give one per member")
        )
    if is_image_plan(plan):
        distributed = plan.training.distributed
        if distributed.processes > 1:
            problems.append(
                (
                    "training.distributed",
                    "an image plan's variant members train one after another in one process: set "
                    "nproc_per_node and nnodes to 1, or train one member's plan distributed",
                )
            )
        if plan.retraining.warm_start:
            problems.append(
                (
                    "retraining.warm_start",
                    "loads the champion's one model.pt into the plan's model; a variant ensemble's champion has "
                    "one per member (members/<k>): turn warm_start off",
                )
            )
    elif plan.data.format not in ARRAY_FORMATS:
        problems.append(
            (
                "variants",
                f"applies to sequence, table and image classifier plans, not data.format {plan.data.format}: a "
                "detector's members are model.detector.ensemble, each with its own training keys in "
                "model.detector.ensemble.overrides; a multi-sensor system has its fusion",
            )
        )
    elif plan.model is not None and plan.model.family not in VARIANT_FAMILIES:
        problems.append(("variants", f"members are rnn or mlp models, not model.family {plan.model.family}"))
    if plan.ensemble is not None:
        problems.append(
            (
                "variants",
                "not together with ensemble (the table plan's mlp + XGBoost): each member would carry its own "
                "XGBoost model; use one of the two",
            )
        )
    if plan.evaluation.cross_validation is not None:
        problems.append(("variants", "not together with evaluation.cross_validation: cross-validate one member's plan"))
    return problems
