"""ONNX export of a `detector` (FCOS): the dense network in the graph, torchvision's post-process in numpy.

Why not NMS in the graph: FCOS.postprocess_detections loops over images and levels with data-dependent
shapes (masks, top-k of a variable count, NMS); only the TorchScript exporter takes it, as per-image
outputs traced at one batch size, which a dynamic batch, INT8 and TensorRT all trip on. The dense
part is one static graph per input size, exported like the classifiers (torch.export, opset 18):

    images (B, 3, H, W) letterboxed in [0, 1] -> normalize (backbone mean/std), zero-pad to a multiple
      of 32 (torchvision's batching) -> timm body -> FPN P3..P7 -> FCOS head, then
    boxes  (B, A, 4): x1, y1, x2, y2 letterbox px, BoxLinearCoder on this size's anchors (constants),
           clipped to (W, H) as clip_boxes_to_image
    scores (B, A, C): sqrt(sigmoid(cls_logits) * sigmoid(centerness)), as postprocess_detections
A: the locations of the five levels in order; an ensemble's members side by side (M*A). The export
stores the level sizes in the file's metadata (`read_level_sizes`) for the numpy post-process
(rooivalk.export.detector_postprocess), which `verify_detector_onnx` checks against PyTorch's own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rooivalk.export._onnx_io import atomic_output
from rooivalk.export.detector_postprocess import detections_from_outputs, member_postprocess, postprocess_settings
from rooivalk.export.onnx_export import OPSET, replace_conv2d_same
from rooivalk.models.detection_metrics import Detections
from rooivalk.models.detector import Detector

INPUT_NAME = "images"
OUTPUT_NAMES = ["boxes", "scores"]
LEVEL_SIZES_KEY = "rooivalk.detector.level_sizes"  # one member's
MEMBERS_KEY = "rooivalk.detector.members"  # an ensemble's members side by side on the location axis
SIZE_DIVISIBLE = 32  # torchvision's GeneralizedRCNNTransform.batch_images pads to this


class _DenseDetector(nn.Module):
    """A Detector's network for one input size: images -> (boxes (B, A, 4), scores (B, A, C))."""

    mean: torch.Tensor
    std: torch.Tensor
    anchors: torch.Tensor  # (A, 4) x1, y1, x2, y2: a square per location, side 8, 16, ..., 128 by level
    limits: torch.Tensor

    def __init__(self, model: Detector, height: int, width: int) -> None:
        super().__init__()
        from torchvision.models.detection.image_list import ImageList

        fcos = model.fcos
        self.backbone, self.head, self.box_coder = fcos.backbone, fcos.head, fcos.box_coder
        self.register_buffer("mean", torch.tensor(model.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(model.std).view(1, 3, 1, 1))
        # Zero padding after normalization, right and bottom, as batch_images does.
        self.pad = (0, -width % SIZE_DIVISIBLE, 0, -height % SIZE_DIVISIBLE)
        padded = torch.zeros(1, 3, height + self.pad[3], width + self.pad[1])
        with torch.no_grad():
            features = list(self.backbone(padded).values())
        # Anchors depend only on the padded size and the feature map sizes: constants of the graph.
        anchors = fcos.anchor_generator(ImageList(padded, [(height, width)]), features)[0]  # (A, 4)
        self.register_buffer("anchors", anchors)
        self.register_buffer("limits", torch.tensor([width, height, width, height], dtype=torch.float32))
        self.level_sizes = [int(f.shape[-2] * f.shape[-1]) for f in features]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (images - self.mean) / self.std
        if any(self.pad):
            x = nn.functional.pad(x, self.pad)
        features = list(self.backbone(x).values())  # 5 x (B, F, H_l, W_l)
        head = self.head(features)  # cls_logits (B, A, C), bbox_regression (B, A, 4), bbox_ctrness (B, A, 1)
        boxes = self.box_coder.decode(head["bbox_regression"], self.anchors)  # (B, A, 4)
        boxes = torch.minimum(boxes.clamp(min=0), self.limits)
        scores = torch.sqrt(torch.sigmoid(head["cls_logits"]) * torch.sigmoid(head["bbox_ctrness"]))
        return boxes, scores


class _DenseEnsemble(nn.Module):
    """Several Detectors' networks on the same images, their outputs side by side on the location axis:
    boxes (B, M*A, 4), scores (B, M*A, C), member k's A locations at [k*A, (k+1)*A)."""

    def __init__(self, members: Sequence[_DenseDetector]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.pad = members[0].pad
        self.level_sizes = members[0].level_sizes

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = [member(images) for member in self.members]
        return torch.cat([o[0] for o in outputs], dim=1), torch.cat([o[1] for o in outputs], dim=1)


def _dense(models: Sequence[Detector], height: int, width: int) -> _DenseDetector | _DenseEnsemble:
    """One member's network, or an ensemble's side by side."""
    dense = [_DenseDetector(model.eval(), height, width).eval() for model in models]
    return dense[0] if len(dense) == 1 else _DenseEnsemble(dense).eval()


def _export(dense: nn.Module, example: torch.Tensor, target: Path, opset: int) -> None:
    names: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": OUTPUT_NAMES, "opset_version": opset}
    if opset < OPSET:
        # The torch.export exporter builds opset 18 and its down-conversion fails on this graph, leaving
        # it at 18 (measured, torch 2.14: Reshape/ReduceMean axes): the TorchScript exporter writes 17.
        axes = {name: {0: "batch"} for name in [INPUT_NAME, *OUTPUT_NAMES]}
        torch.onnx.export(dense, (example,), str(target), dynamo=False, dynamic_axes=axes, **names)
        return
    shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},)
    program = torch.onnx.export(dense, (example,), dynamo=True, dynamic_shapes=shapes, optimize=True, **names)
    assert program is not None
    program.save(str(target), external_data=False)


def export_detector_onnx(
    model: Detector | Sequence[Detector], path: str | Path, input_height: int, input_width: int, opset: int = OPSET
) -> dict[str, Any]:
    """Export `model` for letterboxed (B, 3, input_height, input_width) inputs, B dynamic, atomically; a
    sequence of detectors (an ensemble's members) is one graph with their outputs side by side.

    Opset 18 and up: the torch.export exporter (as rooivalk.export.onnx_export); below: TorchScript's.
    Returns path, names, input size, num_classes, anchors (per member), level_sizes, members, opset and
    export seconds; level_sizes are also in the file's metadata (`read_level_sizes`). The bundle's
    post-process settings: rooivalk.export.detector_postprocess.bundle_postprocess.
    """
    import onnx

    start = time.perf_counter()
    models = [model] if isinstance(model, Detector) else list(model)
    dense = _dense(models, input_height, input_width)
    # Constant 'SAME' pads for timm's tf_* layers (see onnx_export): a static graph that INT8 keeps intact.
    size = (input_height + dense.pad[3], input_width + dense.pad[1])
    for member in dense.members if isinstance(dense, _DenseEnsemble) else [dense]:
        assert isinstance(member, _DenseDetector)
        member.backbone = replace_conv2d_same(member.backbone, size)
    example = torch.rand(2, 3, input_height, input_width)  # batch 2: torch.export specializes size 1
    with atomic_output(Path(path)) as tmp, torch.no_grad():
        _export(dense, example, tmp, opset)
        graph = onnx.load(str(tmp))
        written = {o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")}
        if written != {opset}:
            raise ValueError(f"ONNX export of the detector at opset {opset} wrote opset {sorted(written)}")
        props = {LEVEL_SIZES_KEY: json.dumps(dense.level_sizes), MEMBERS_KEY: str(len(models))}
        onnx.helper.set_model_props(graph, props)
        onnx.save(graph, str(tmp))
    return {
        "path": str(path),
        "input_name": INPUT_NAME,
        "output_names": list(OUTPUT_NAMES),
        "input_height": input_height,
        "input_width": input_width,
        "num_classes": models[0].num_classes,
        "anchors": sum(dense.level_sizes),
        "level_sizes": dense.level_sizes,
        "members": len(models),
        "opset": opset,
        "seconds": time.perf_counter() - start,
    }


def read_level_sizes(path: str | Path) -> list[int] | None:
    """The per-level location counts stored by `export_detector_onnx`; None for another file."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(props[LEVEL_SIZES_KEY]) if LEVEL_SIZES_KEY in props else None


def _compare(want: Detections, have: Detections, cutoff: float, tolerance: float, result: dict[str, Any]) -> None:
    """Pairs each detection of either side with a same-label box of the other within `tolerance` px on
    every coordinate, the closest in score. One without is `unmatched` when it scores >= cutoff, else
    `near_cutoff` (ranking ties at the score threshold or the max_detections cut). Adds to `result`."""
    for mine, theirs in ((want, have), (have, want)):
        for box, score, label in zip(mine.boxes, mine.scores, mine.labels, strict=True):
            near = (theirs.labels == label) & (np.abs(theirs.boxes - box).max(axis=1) <= tolerance)
            if not near.any():
                result["unmatched" if score >= cutoff else "near_cutoff"] += 1
                continue
            # Several boxes may sit within tolerance (clipped to the same corner): the closest score pairs.
            pair = np.flatnonzero(near)[np.abs(theirs.scores[near] - score).argmin()]
            result["matched"] += 1
            result["box_max_abs_diff"] = max(result["box_max_abs_diff"], float(np.abs(theirs.boxes[pair] - box).max()))
            result["score_max_abs_diff"] = max(result["score_max_abs_diff"], abs(float(theirs.scores[pair] - score)))


def verify_detector_onnx(
    model: Detector | Sequence[Detector],
    path: str | Path,
    images: torch.Tensor | np.ndarray,
    margin: float = 1e-3,
    tolerance: float = 0.05,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """ONNX Runtime (CPU) + the bundle's post-process against the PyTorch model's eval detections on
    `images` (B, 3, H, W) letterboxed in [0, 1]. `settings`: the bundle's post-process before calibration
    (rooivalk.export.detector_postprocess.bundle_postprocess); None: one detector's own. For an ensemble
    (`model` its members, `settings` with their fusion and each member's post-process) PyTorch runs each
    member with its own post-process and both sides are fused the same way: a bundle that post-processes a
    member with other settings than the member's shows as unmatched detections.

    Raw outputs are compared with the exported network in PyTorch (max abs diffs). Detections, both
    ways: `matched` ones give the max box and score diffs; `unmatched` counts those with no same-label
    box within `tolerance` px on the other side that score >= score_threshold + margin (an ensemble's:
    its members' highest; on a full list, its last score + margin), where ranking is stable: it should
    be 0. Misses below: `near_cutoff`.
    """
    import onnxruntime as ort

    from rooivalk.models.box_fusion import fuse_members

    batch = torch.as_tensor(np.asarray(images, dtype=np.float32))
    models = [model] if isinstance(model, Detector) else list(model)
    settings = dict(postprocess_settings(models[0]) if settings is None else settings)
    ensemble = settings.get("ensemble")
    members = 1 if ensemble is None else int(ensemble["members"])
    if len(models) != members:
        raise ValueError(f"{len(models)} detector(s) to verify against post-process settings of {members} member(s)")
    height, width = int(batch.shape[-2]), int(batch.shape[-1])
    dense = _dense(models, height, width)
    with torch.inference_mode():
        per_member = [[_detections(output) for output in member(batch)] for member in models]
        want_boxes, want_scores = (t.numpy() for t in dense(batch))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boxes, scores = session.run(OUTPUT_NAMES, {INPUT_NAME: batch.numpy()})
    got = detections_from_outputs(boxes, scores, settings, read_level_sizes(path), (width, height))
    most = int(settings["max_detections"])  # one detector's, or the fused boxes kept
    expected = per_member[0]
    if ensemble is not None:
        sizes = [(width, height)] * len(batch)
        expected = fuse_members(per_member, sizes, ensemble.get("weights"), float(ensemble["iou_threshold"]), most)
    candidates = max(float(own["score_threshold"]) for own in member_postprocess(settings))
    result: dict[str, Any] = {
        "images": len(batch),
        "raw_boxes_max_abs_diff": float(np.abs(boxes - want_boxes).max()),
        "raw_scores_max_abs_diff": float(np.abs(scores - want_scores).max()),
        "detections_pytorch": sum(len(e) for e in expected),
        "detections_onnx": sum(len(g) for g in got),
        "matched": 0,
        "unmatched": 0,
        "near_cutoff": 0,
        "box_max_abs_diff": 0.0,
        "score_max_abs_diff": 0.0,
    }
    for want, mine in zip(expected, got, strict=True):
        cutoff = (float(want.scores.min()) if len(want) >= most else candidates) + margin
        _compare(want, mine, cutoff, tolerance, result)
    return result


def _detections(output: dict[str, torch.Tensor]) -> Detections:
    """One image's eval output of a torchvision detector as Detections."""
    return Detections(output["boxes"].numpy(), output["scores"].numpy(), output["labels"].numpy())
