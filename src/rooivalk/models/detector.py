"""The `detector` family: torchvision's FCOS head on a timm backbone with a feature pyramid.

Why these parts: FCOS is anchor-free (no anchor sizes to tune per dataset), torchvision keeps it
(BSD-3), and its losses, box coder and NMS are torchvision's own, compiled ops included (torch and
torchvision are a matched pair, docs/dependencies.md). The backbone is any timm model that gives
`features_only` maps (the default ImageNet EfficientNet-Lite0, weights from `model.pretrained`),
so the fine-tuning stages, per-group learning rates and BatchNorm rules of the engine apply to it
as to a classifier: the groups are the backbone's stem and blocks, then `neck` (the FPN) and `head`
(FCOS's classification, box and centerness towers).

Inputs are letterboxed by the task (rooivalk.models.letterbox) to the plan's input size, or to a
per-batch size in multi-scale training; torchvision's own resize is switched off so the boxes the
task hands in are the boxes the loss sees. Images: float (B, 3, H, W) in [0, 1]; the model
normalizes with the backbone's mean and std.

    training: model(images, targets) -> {"classification", "bbox_regression", "bbox_ctrness"} losses
    eval:     model(images) -> [{"boxes" (N, 4) xyxy px, "scores" (N,), "labels" (N,)}] per image
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from rooivalk.models.groups import NECK
from rooivalk.models.registry import register_family
from rooivalk.models.weights import load_state_dict
from rooivalk.plan import DetectorSpec, ModelSpec

ARCHITECTURE_PREFIX = "fcos_"
# FCOS's loss names -> the plan's loss weight keys (model.detector.loss_weights).
LOSS_KEYS = {"classification": "cls", "bbox_regression": "box", "bbox_ctrness": "centerness"}


def backbone_name(architecture: str) -> str:
    if not architecture.startswith(ARCHITECTURE_PREFIX):
        raise ValueError(
            f"model.architecture: {architecture!r}: a detector is fcos_<timm backbone>, e.g. fcos_tf_efficientnet_lite0"
        )
    return architecture[len(ARCHITECTURE_PREFIX) :]


class _PyramidBackbone(nn.Module):
    """timm feature maps at strides 8, 16, 32 -> an FPN with P6/P7: five maps of `out_channels`."""

    def __init__(self, body: nn.Module, in_channels: list[int], out_channels: int) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelP6P7

        self.body = body
        extra = LastLevelP6P7(out_channels, out_channels)  # P6, P7 at strides 64, 128: large objects
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra)
        self.out_channels = out_channels  # what torchvision's FCOS reads to size its head

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = self.body(images)  # [(B, C_i, H/s_i, W/s_i)] for s_i = 8, 16, 32
        return self.fpn(OrderedDict((str(index), feature) for index, feature in enumerate(maps)))  # type: ignore[no-any-return]


def _transform_without_resize(mean: list[float], std: list[float], height: int, width: int) -> nn.Module:
    """torchvision's batching transform (normalize, pad to a multiple of 32) that leaves sizes alone:
    the task letterboxes, so the transform's resize would only undo multi-scale training."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class _Transform(GeneralizedRCNNTransform):  # type: ignore[misc]
        def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None) -> Any:
            return image, target

    return _Transform(min(height, width), max(height, width), mean, std)


def _softplus_regression_head(in_channels: int) -> nn.Module:
    """FCOS's box-distance head with softplus where torchvision has a ReLU on the distances.

    A ReLU whose inputs all go negative stops every box's gradient for good: measured on the shapes
    demo, a head-only stage at lr 0.003 ended with every predicted box of zero size (mAP 0) while
    the class scores trained. Softplus is smooth and never dead; everything else is torchvision's."""
    from torchvision.models.detection.fcos import FCOSRegressionHead

    class _Head(FCOSRegressionHead):  # type: ignore[misc]
        def forward(self, x: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            regressions, centerness = [], []
            for features in x:  # per level: (B, C, H, W)
                tower = self.conv(features)
                distances = nn.functional.softplus(self.bbox_reg(tower))  # (B, 4, H, W): l, t, r, b >= 0
                batch, _, height, width = distances.shape
                regressions.append(
                    distances.view(batch, -1, 4, height, width).permute(0, 3, 4, 1, 2).reshape(batch, -1, 4)
                )
                ctr = self.bbox_ctrness(tower)  # (B, 1, H, W)
                centerness.append(ctr.view(batch, -1, 1, height, width).permute(0, 3, 4, 1, 2).reshape(batch, -1, 1))
            return torch.cat(regressions, dim=1), torch.cat(centerness, dim=1)

    return _Head(in_channels, 1)


# Candidates per level kept before NMS, per detection kept after it (torchvision's fcos default: 1000 for 100).
TOPK_PER_DETECTION = 10


class Detector(nn.Module):
    """FCOS on a timm pyramid; `loss_weights` weight FCOS's three losses in `training_loss`. Built from a
    spec with model.detector.ensemble it is member 0 (the root of an ensemble's model directory), with
    that member's own score / NMS / max_detections post-process (DetectorSpec.member)."""

    def __init__(self, spec: ModelSpec, num_classes: int) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights only ever come from model.pretrained
        import timm
        from torchvision.models.detection import FCOS
        from torchvision.models.detection.anchor_utils import AnchorGenerator

        settings = spec.detector or DetectorSpec()
        name = backbone_name(spec.architecture)
        if not timm.is_model(name):
            raise ValueError(f"model.architecture: {name!r} is not a timm model")
        body = timm.create_model(name, pretrained=False, features_only=True, out_indices=(-3, -2, -1))
        feature_info: Any = body.feature_info  # timm's FeatureInfo: channels and strides of each map
        if list(feature_info.reduction()) != [8, 16, 32]:
            raise ValueError(
                f"model.architecture: {name}'s last three feature maps have strides {feature_info.reduction()}, "
                "a detector needs 8, 16, 32"
            )
        config = getattr(body, "pretrained_cfg", None) or {}
        self.mean = [float(v) for v in config.get("mean", (0.485, 0.456, 0.406))]
        self.std = [float(v) for v in config.get("std", (0.229, 0.224, 0.225))]
        self.input_height, self.input_width = settings.input_height, settings.input_width
        self.num_classes = num_classes
        self.loss_weights = settings.loss_weights.model_dump()
        backbone = _PyramidBackbone(body, list(feature_info.channels()), settings.fpn_channels)
        # One anchor per location: FCOS uses them only as the location's point and its size range
        # (8 px per stride unit), as torchvision's own fcos_resnet50_fpn does.
        anchors = AnchorGenerator(sizes=((8,), (16,), (32,), (64,), (128,)), aspect_ratios=((1.0,),) * 5)
        # Labels are class indices 0..C-1: FCOS scores each class with its own sigmoid, so no
        # background channel is needed (an unmatched location is all zeros).
        own = settings.member(0)  # this spec's post-process, or an ensemble's member 0's
        self.fcos = FCOS(
            backbone,
            num_classes,
            anchor_generator=anchors,
            score_thresh=own.score_threshold,
            nms_thresh=own.nms_iou,
            detections_per_img=own.max_detections,
            topk_candidates=own.max_detections * TOPK_PER_DETECTION,
        )
        self.fcos.head.regression_head = _softplus_regression_head(settings.fpn_channels)
        self.fcos.transform = _transform_without_resize(self.mean, self.std, self.input_height, self.input_width)
        if spec.pretrained:
            load_backbone_weights(body, spec.pretrained)

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        return self.fcos(list(images), targets)

    def backbone_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The pyramid's maps of images (B, 3, H, W) in [0, 1], normalized as the detector does: what
        BatchNorm statistics are re-estimated on (the backbone holds every BatchNorm of the model)."""
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        return self.fcos.backbone((images - mean) / std)  # type: ignore[no-any-return]

    def weighted_loss(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """FCOS's losses weighted by model.detector.loss_weights: a scalar."""
        return sum((losses[name] * self.loss_weights[key] for name, key in LOSS_KEYS.items()), torch.zeros(()))

    def rooivalk_layer_groups(self) -> list[tuple[str, list[str]]]:
        """stem, the backbone's blocks one by one, neck (FPN), head: input to output."""
        names = [name for name, _ in self.named_parameters()]
        body = "fcos.backbone.body."
        groups: dict[str, list[str]] = {}
        for name in names:
            if name.startswith(body):
                parts = name[len(body) :].split(".")
                group = f"blocks.{parts[1]}" if parts[0] == "blocks" else "stem"
            elif name.startswith("fcos.backbone.fpn."):
                group = NECK
            else:
                group = "head"
            groups.setdefault(group, []).append(name)
        blocks = sorted((g for g in groups if g.startswith("blocks.")), key=lambda g: int(g.split(".")[1]))
        order = ["stem", *blocks, NECK, "head"]
        return [(group, groups[group]) for group in order if group in groups]


def load_backbone_weights(body: nn.Module, uri: str) -> None:
    """A timm classifier's state dict into the features-only body: its classifier and last conv are
    not part of the body; anything else missing or mis-shaped is an error naming the keys."""
    state = load_state_dict(uri)
    own = body.state_dict()
    fitting = {key: tensor for key, tensor in state.items() if key in own}
    mismatched = [key for key, tensor in fitting.items() if own[key].shape != tensor.shape]
    missing = [key for key in own if key not in fitting and not key.endswith("num_batches_tracked")]
    if mismatched or missing:
        raise ValueError(
            f"{uri}: weights do not fit the detector's backbone: missing {missing[:5]}, shapes differ {mismatched[:5]}"
        )
    body.load_state_dict(fitting, strict=False)


@register_family("detector", task="detection")
def create_detector(spec: ModelSpec, num_classes: int) -> nn.Module:
    return Detector(spec, num_classes)
