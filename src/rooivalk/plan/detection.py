"""Detector plans: the `detector` family's model settings and box-aware augmentation.

`model.detector` applies to `model.family: detector` only, `training.detection_augment` to detectors
only (rooivalk.plan.model_keys and rooivalk.plan.techniques refuse them elsewhere). The field names of
DetectionAugmentSpec are those of rooivalk.training.tasks.detection_augment.DetectionAugmentSettings,
one for one.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from rooivalk.plan.base import Strict

STRIDE = 32  # the coarsest backbone stride: input sides are multiples of it
# The model.detector keys an ensemble member may set for itself: the post-process of its own boxes,
# before they are fused (rooivalk.plan.detector_members).
MEMBER_POSTPROCESS = ("score_threshold", "nms_iou", "max_detections")
MEMBER_POSTPROCESS_PATHS = {f"model.detector.{key}": key for key in MEMBER_POSTPROCESS}  # override path -> key


class LossWeightsSpec(Strict):
    """Weights of FCOS's three losses in the training loss."""

    box: float = Field(1.0, ge=0, description="GIoU box regression")
    cls: float = Field(1.0, ge=0, description="sigmoid focal classification")
    centerness: float = Field(1.0, ge=0, description="centerness (BCE)")


class DetectorEnsembleSpec(Strict):
    """model.detector.ensemble: the plan's detector trained several times (seeds training.seed, +1, ...,
    each member with its own training overrides and post-process), the members' detections merged by
    weighted boxes fusion in evaluation, export and the bundle (members: rooivalk.plan.detector_members)."""

    members: int = Field(3, ge=2, le=8, description="detectors trained; each gets training.budget_seconds / members")
    weights: list[float] | None = Field(None, description="each member's fusion weight, in member order; null: equal")
    iou_threshold: float = Field(0.55, gt=0, le=1, description="boxes of different members fuse at this IoU")
    overrides: list[dict[str, Any]] | None = Field(
        None,
        description="one per member, in member order: its training keys and its own model.detector "
        "score_threshold / nms_iou / max_detections, as --set takes them (dotted path -> value, e.g. "
        "training.detection_augment.strength: 0.5); {}: the plan as is (seed training.seed + k unless it sets "
        "training.seed); null: every member {}",
    )

    @model_validator(mode="after")
    def _weights(self) -> DetectorEnsembleSpec:
        if self.overrides is not None and len(self.overrides) != self.members:
            raise ValueError(f"overrides: {len(self.overrides)} given for {self.members} members: give one per member")
        if self.weights is not None:
            if len(self.weights) != self.members:
                raise ValueError(f"weights: {len(self.weights)} given for {self.members} members")
            if any(not weight > 0 for weight in self.weights):  # a 0 weight divides a lone box's score by 0
                raise ValueError(f"weights must be > 0 (leave a member out with fewer members), got {self.weights}")
        return self


class DetectorSpec(Strict):
    """model.detector: the input size, neck and post-processing of a `detector` model."""

    input_height: int = Field(384, ge=64, le=2048, multiple_of=STRIDE, description="pixels; images are letterboxed")
    input_width: int = Field(640, ge=64, le=2048, multiple_of=STRIDE, description="pixels; images are letterboxed")
    fpn_channels: int = Field(
        64,
        ge=64,
        le=512,
        multiple_of=32,
        description="channels of the feature pyramid and the head towers: their GroupNorm has 32 groups, and a "
        "group needs more than one value at batch 1 on the 1-pixel top level",
    )
    loss_weights: LossWeightsSpec = LossWeightsSpec()
    score_threshold: float = Field(
        0.05, ge=0, lt=1, description="detections below this score are dropped before NMS (mAP needs the low tail)"
    )
    nms_iou: float = Field(0.6, gt=0, le=1, description="per-class NMS IoU")
    max_detections: int = Field(100, ge=1, le=1000, description="per image, after NMS")
    operating_threshold: float = Field(
        0.25, gt=0, lt=1, description="score at which precision, recall and F1 are reported and Predictor keeps boxes"
    )
    ensemble: DetectorEnsembleSpec | None = Field(
        None, description="several detectors of this plan merged by weighted boxes fusion; null: one detector"
    )

    def member(self, member: int) -> DetectorSpec:
        """Member `member` of this detector's ensemble as a detector of its own: no ensemble, and the
        post-process (MEMBER_POSTPROCESS) its overrides set, model.detector.<key>; the fused boxes keep this
        spec's max_detections and operating_threshold. Without an ensemble, this spec."""
        if self.ensemble is None:
            return self
        overrides = self.ensemble.overrides[member] if self.ensemble.overrides is not None else {}
        own = {key: overrides[path] for path, key in MEMBER_POSTPROCESS_PATHS.items() if path in overrides}
        return DetectorSpec.model_validate({**self.model_dump(), "ensemble": None, **own})


class DetectionAugmentSpec(Strict):
    """training.detection_augment: box-aware augmentation of a detector's training images (strength 1)."""

    hflip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    scale: tuple[float, float] = Field((0.8, 1.2), description="random zoom range of the affine")
    rotation: float = Field(5.0, ge=0, le=45, description="max degrees either way")
    crop_min_area: float = Field(0.7, gt=0, le=1, description="a random crop keeps at least this area share; 1: off")
    brightness: float = Field(0.2, ge=0)
    contrast: float = Field(0.2, ge=0)
    saturation: float = Field(0.2, ge=0)
    hue: float = Field(0.015, ge=0, le=0.5)
    rain: float = Field(0.0, ge=0, le=1, description="probability of rain streaks")
    fog: float = Field(0.0, ge=0, le=1, description="probability of fog")
    sun_flare: float = Field(0.0, ge=0, le=1, description="probability of a sun flare")
    glare: float = Field(0.0, ge=0, le=1, description="probability of headlight glare")
    noise: float = Field(0.0, ge=0, le=1, description="probability of shot + read sensor noise")
    mosaic: float = Field(0.0, ge=0, le=1, description="probability a sample is a 2x2 mosaic of 4 images")
    mixup: float = Field(0.0, ge=0, le=1, description="probability a sample is blended with another")
    min_box_size: float = Field(2.0, ge=0, description="pixels: smaller boxes after a transform are dropped")
    strength: float = Field(1.0, ge=0, description="multiplies every magnitude and probability; 0: off")
    multi_scale: tuple[float, float] | None = Field(
        None,
        description="multi-scale training: each batch at a random size in [low, high] x the input size "
        "(multiples of 32, aspect kept); null: every batch at the input size",
    )

    @model_validator(mode="after")
    def _ranges(self) -> DetectionAugmentSpec:
        for name in ("scale", "multi_scale"):
            value = getattr(self, name)
            if value is not None and not 0 < value[0] <= value[1]:
                raise ValueError(f"{name} needs 0 < low <= high, got {list(value)}")
        return self
