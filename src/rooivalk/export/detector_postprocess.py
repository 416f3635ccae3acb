"""A detector bundle's post-process, in numpy: the graph's dense outputs -> each image's detections.

`postprocess` is torchvision's FCOS postprocess_detections per image: per level, candidates scoring
> score_threshold and their `topk` best (Detector: 10 x max_detections), then per-class NMS and the
`max_detections` best. On the PyTorch dense outputs it gives the model's eval detections to within an
ulp (tests). Per-level top-k needs the level sizes, which the export stores in the ONNX file's metadata;
without them top-k runs over all levels at once, which differs once more than `topk` candidates pass the
threshold (measured: topk 5 changes the detections, the default 1000 did not on random heads at 384 x 640).
Deviations, at exact ties or float rounding only: NMS runs class by class (torchvision offsets the classes
apart and runs one NMS below 4000 boxes on the CPU); equal scores keep index order.

The settings a bundle carries (preprocessing.postprocess, `bundle_postprocess`):

    score_threshold, nms_iou, max_detections, topk   one detector's post-process; an ensemble's
                                                      model.detector (max_detections: fused boxes kept)
    level_sizes                                       locations per pyramid level
    ensemble           {members, weights, iou_threshold, overrides, member_postprocess: one
                       {score_threshold, nms_iou, max_detections, topk} per member, in member order}
    class_temperatures, class_biases                  per-class calibration of the final scores

A bundle written before members had their own post-process has no member_postprocess: every member then
runs the top-level settings, as it was exported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from rooivalk.models.detection_metrics import Detections

if TYPE_CHECKING:
    from rooivalk.models.detector import Detector
    from rooivalk.models.letterbox import Letterbox
    from rooivalk.plan import DetectorSpec


class PostprocessSettings(TypedDict):
    score_threshold: float
    nms_iou: float
    max_detections: int
    topk: int


POSTPROCESS_KEYS = tuple(PostprocessSettings.__annotations__)


def postprocess_settings(model: Detector) -> PostprocessSettings:
    """The model's own post-process arguments (from model.detector; an ensemble member's from its
    overrides), as `postprocess` takes them."""
    fcos = model.fcos
    return PostprocessSettings(
        score_threshold=float(fcos.score_thresh),
        nms_iou=float(fcos.nms_thresh),
        max_detections=int(fcos.detections_per_img),
        topk=int(fcos.topk_candidates),
    )


def bundle_postprocess(models: Sequence[Detector], detector: DetectorSpec) -> dict[str, Any]:
    """The post-process settings a bundle of `models` carries (see the module docstring): one detector's
    own, or for an ensemble (`models` its members in order, `detector` the root's model.detector) the
    ensemble's top-level settings with each member's own post-process and the fusion settings."""
    from rooivalk.models.detector import TOPK_PER_DETECTION

    ensemble = detector.ensemble
    if ensemble is None:
        return dict(postprocess_settings(models[0]))
    if len(models) != ensemble.members:
        raise ValueError(f"{len(models)} detector(s) given for an ensemble of {ensemble.members} members")
    shared = PostprocessSettings(
        score_threshold=detector.score_threshold,
        nms_iou=detector.nms_iou,
        max_detections=detector.max_detections,
        topk=detector.max_detections * TOPK_PER_DETECTION,
    )
    members = [dict(postprocess_settings(model)) for model in models]
    return {**shared, "ensemble": {**ensemble.model_dump(), "member_postprocess": members}}


def member_postprocess(settings: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Each member's post-process settings, in member order (one detector: its own)."""
    ensemble = settings.get("ensemble")
    if ensemble is None:
        return [settings]
    own = ensemble.get("member_postprocess")
    return [settings] * int(ensemble["members"]) if own is None else list(own)


def with_candidate_threshold(settings: Mapping[str, Any], threshold: float) -> dict[str, Any]:
    """`settings` with every post-process's candidate threshold (the top-level one and each member's)
    lowered to `threshold` where it is higher: what a caller asking for lower scores needs first."""
    lowered = dict(settings)
    lowered["score_threshold"] = min(float(settings["score_threshold"]), threshold)
    ensemble = settings.get("ensemble")
    if ensemble is not None and ensemble.get("member_postprocess") is not None:
        members = [
            {**own, "score_threshold": min(float(own["score_threshold"]), threshold)}
            for own in ensemble["member_postprocess"]
        ]
        lowered["ensemble"] = {**ensemble, "member_postprocess": members}
    return lowered


def _nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS (torchvision's CPU kernel): indices kept, best score first; a box goes when its IoU
    with a kept one is > iou_threshold (degenerate boxes, 0/0 = NaN, are never suppressed)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    with np.errstate(invalid="ignore", divide="ignore"):
        while order.size:
            best, rest = order[0], order[1:]
            keep.append(best)
            width = np.maximum(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0)
            height = np.maximum(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0)
            inter = width * height
            order = rest[~(inter / (areas[best] + areas[rest] - inter) > iou_threshold)]
    return np.asarray(keep, dtype=np.int64)


def _postprocess_image(
    boxes: np.ndarray, scores: np.ndarray, settings: PostprocessSettings, level_sizes: Sequence[int]
) -> Detections:
    classes = scores.shape[1]
    picked: list[tuple[np.ndarray, np.ndarray]] = []  # (flat index into (A, C), score) per level
    bounds = np.cumsum([0, *level_sizes])
    for first, last in zip(bounds[:-1], bounds[1:], strict=True):
        flat = scores[first:last].reshape(-1)  # anchor-major: index = anchor * C + class
        candidates = np.flatnonzero(flat > settings["score_threshold"])
        best = candidates[np.argsort(-flat[candidates], kind="stable")[: settings["topk"]]]
        picked.append((best + first * classes, flat[best]))
    index = np.concatenate([p[0] for p in picked])
    kept_scores = np.concatenate([p[1] for p in picked]).astype(np.float32)
    kept_boxes = boxes[index // classes].astype(np.float32)
    labels = index % classes
    keep = np.concatenate(
        [
            np.flatnonzero(labels == c)[_nms(kept_boxes[labels == c], kept_scores[labels == c], settings["nms_iou"])]
            for c in np.unique(labels)
        ]
        or [np.zeros(0, np.int64)]
    )
    keep = keep[np.argsort(-kept_scores[keep], kind="stable")][: settings["max_detections"]]
    return Detections(kept_boxes[keep], kept_scores[keep], labels[keep])


def postprocess(
    boxes: np.ndarray,
    scores: np.ndarray,
    score_threshold: float,
    nms_iou: float,
    max_detections: int,
    topk: int,
    level_sizes: Sequence[int] | None = None,
) -> list[Detections]:
    """FCOS's postprocess_detections on the graph's outputs: boxes (B, A, 4), scores (B, A, C) ->
    one Detections per image in letterbox pixels, best score first.

    Per level (`level_sizes`, A in all; None: one level, see the module docstring): candidates scoring
    > score_threshold, the `topk` best; then per-class NMS at nms_iou and the `max_detections` best.
    """
    boxes, scores = np.asarray(boxes, np.float32), np.asarray(scores, np.float32)
    sizes = list(level_sizes) if level_sizes is not None else [boxes.shape[1]]
    if sum(sizes) != boxes.shape[1] or scores.shape[:2] != boxes.shape[:2]:
        raise ValueError(f"boxes {boxes.shape}, scores {scores.shape} and level sizes {sizes} disagree")
    settings = PostprocessSettings(
        score_threshold=score_threshold, nms_iou=nms_iou, max_detections=max_detections, topk=topk
    )
    return [_postprocess_image(b, s, settings, sizes) for b, s in zip(boxes, scores, strict=True)]


def detections_from_outputs(
    boxes: np.ndarray,
    scores: np.ndarray,
    settings: Mapping[str, Any],
    level_sizes: Sequence[int] | None,
    image_size: tuple[int, int],
    placements: Sequence[Letterbox] | None = None,
) -> list[Detections]:
    """The bundle's post-process of the graph's outputs, what `Predictor.detect` and the export step run:
    boxes (B, M*A, 4), scores (B, M*A, C) -> one Detections per image, best score first: in letterbox
    pixels (image_size: the letterbox's (width, height)), or with `placements` (each image's Letterbox)
    in each image's own pixels, clipped to it, an ensemble's members mapped there before they are fused
    (as the evaluate step fuses them).

    `settings`: the bundle's (module docstring). With `ensemble`, member k's locations are the k-th of M
    equal slices, each post-processed with that member's settings, then fused by weighted boxes fusion
    and the top-level max_detections best kept; `class_temperatures` with `class_biases` (one per class)
    apply to the final scores (rooivalk.models.detection_calibration).
    """
    from rooivalk.models.box_fusion import fuse_members

    ensemble, temperatures = settings.get("ensemble"), settings.get("class_temperatures")
    boxes = np.array(boxes, dtype=np.float32)  # a copy: the corners are mended in place
    # x1, x2 = centre -/+ a distance >= 0, so FP32 gives x2 >= x1; a quantized graph rounds the corners
    # apart and can cross a thin box (measured: by up to 2.7 px, static INT8 of an untrained head).
    boxes[..., 2:] = np.maximum(boxes[..., 2:], boxes[..., :2])
    own = member_postprocess(settings)
    members = len(own)
    if ensemble is not None and members != int(ensemble["members"]):
        raise ValueError(f"{members} member post-process settings for an ensemble of {ensemble['members']} members")
    if boxes.shape[1] % members:
        raise ValueError(f"{boxes.shape[1]} locations do not split into {members} ensemble members")
    step = boxes.shape[1] // members
    per_member = [
        postprocess(
            boxes[:, k * step : (k + 1) * step],
            scores[:, k * step : (k + 1) * step],
            **{key: own[k][key] for key in POSTPROCESS_KEYS},
            level_sizes=level_sizes,
        )
        for k in range(members)
    ]
    sizes = [image_size] * len(boxes)
    if placements is not None:
        per_member = [[_to_original(d, p) for d, p in zip(found, placements, strict=True)] for found in per_member]
        sizes = [placement.original for placement in placements]
    found = per_member[0]
    if ensemble is not None:
        weights, iou = ensemble.get("weights"), float(ensemble["iou_threshold"])
        found = fuse_members(per_member, sizes, weights, iou, int(settings["max_detections"]))
    if temperatures is not None:
        from rooivalk.models.detection_calibration import calibrate_detections

        biases = settings.get("class_biases")
        found = [calibrate_detections(detections, temperatures, biases) for detections in found]
    return found


def _to_original(detections: Detections, placement: Letterbox) -> Detections:
    """Letterbox-pixel detections in the image's own pixels, clipped to it."""
    import torch

    boxes = placement.boxes_to_original(torch.from_numpy(detections.boxes)).numpy()
    return Detections(boxes, detections.scores, detections.labels)
