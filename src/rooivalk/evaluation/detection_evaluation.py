"""`evaluate_model` for detectors: test-split mAP, per-class AP, operating points, gates.

The report holds COCO mAP@0.5 and mAP@0.5:0.95 (torchmetrics on pycocotools), AP@0.5 per class,
precision / recall / F1 at the model's operating threshold and at the three standard operating points
scored side by side from the same detections (recall 0.15, balanced 0.25, precision 0.40: what a
recall-first, balanced or precision-first deployment would see), and a precision-recall plot of the
operating points. Gates name `test_map50`, `test_map`, `test_precision`, `test_recall`, `test_f1`,
`test_ap50_<class>` or `test_<point>_<figure>` (e.g. `test_recall_recall`).

With model.detector.ensemble the figures are the ensemble's (each member's detections fused by weighted
boxes fusion, rooivalk.models.box_fusion.fuse_members) and every member is scored alone beside it:
`test_member_<k>_map50` / `test_member_<k>_map`, and the report's `ensemble` section (each member with
the overrides it trained with).

With `evaluation.tta` the split is scored a second time with test-time augmentation (every flip x
rotation x scale view, boxes mapped back and merged by weighted boxes fusion, rooivalk.models.box_fusion):
`test_tta_*` beside the plain figures, and what it costs, in milliseconds per image at batch 1 for both.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from rooivalk import storage
from rooivalk.data.detection_dataset import load_detection_dataset
from rooivalk.evaluation.gates import GateFailure, check_gates, describe_failures
from rooivalk.evaluation.requirements import measure_requirements, per_class_figures
from rooivalk.evaluation.results import REPORT_FILE, EvaluateResult
from rooivalk.models.box_fusion import fuse_members, keep_best, tta_predict
from rooivalk.models.detection_metrics import Detections, GroundTruth, detection_metrics, operating_points
from rooivalk.models.detector_artifact import DetectorInfo, load_detector_members
from rooivalk.models.detector_inference import ImageCache, detect_images
from rooivalk.plan import DetectionTTASpec, Plan

OPERATING_POINTS = {"recall": 0.15, "balanced": 0.25, "precision": 0.40}
OPERATING_PLOT = "operating_points.png"
LATENCY_IMAGES = 20  # images timed one at a time for the per-image latency of plain and TTA inference


def _tta_detections(
    model: torch.nn.Module, images: list[torch.Tensor], size: tuple[int, int], tta: DetectionTTASpec, most: int
) -> list[Detections]:
    """Each image's views fused, keeping `most` boxes (as many as plain inference keeps)."""

    def predict(view: torch.Tensor) -> Detections:  # one view (3, h, w), letterboxed to the model's input
        return detect_images(model, lambda _: view, 1, size, 1)[0]

    return [
        keep_best(
            tta_predict(predict, image, tta.hflip, tta.rotations, tta.scales, iou_threshold=tta.iou_threshold), most
        )
        for image in images
    ]


def _ms_per_image(run: Callable[[torch.Tensor], object], images: list[torch.Tensor]) -> float:
    run(images[0])  # warm
    started = time.perf_counter()
    for image in images:
        run(image)
    return 1000 * (time.perf_counter() - started) / len(images)


def _ensemble(
    per_member: list[list[Detections]], truths: list[GroundTruth], info: DetectorInfo, sizes: list[tuple[int, int]]
) -> tuple[list[Detections], dict[str, Any]]:
    """The members' detections fused per image (sizes: each image's (width, height)), and each member's own
    mAP beside the ensemble's, with the overrides it trained with ({}: the plan's keys, its own seed)."""
    ensemble = info.detector.ensemble
    assert ensemble is not None
    fused = fuse_members(per_member, sizes, ensemble.weights, ensemble.iou_threshold, info.detector.max_detections)
    overrides = ensemble.overrides or [{} for _ in per_member]
    members = []
    for member, found in enumerate(per_member):
        scores = detection_metrics(found, truths, info.classes, info.operating_threshold)
        figures = {"map50": float(scores["map50"]), "map": float(scores["map"])}
        members.append({"member": member, **figures, "overrides": overrides[member]})
    return fused, {**ensemble.model_dump(exclude={"members"}), "members": members}


def evaluate_detector(
    plan: Plan, model_dir: str, dataset_dir: str, eval_dir: str, split: str = "test"
) -> EvaluateResult:
    """Score the detector on a split; GateFailure (after writing the report) when a gate fails and the
    plan fails on gates."""
    torch.set_num_threads(plan.training.threads or os.cpu_count() or 1)
    models, info = load_detector_members(model_dir)
    model = models[0]
    everything = load_detection_dataset(dataset_dir)
    dataset = everything.subset(split)
    if len(dataset) == 0 and split == "test":  # a train/val layout (YOLO's usual): scored on val, as export
        split, dataset = "val", everything.subset("val")  # does; the report's `split` says so
    if len(dataset) == 0:
        raise ValueError(f"{dataset_dir}: the {split!r} split is empty; nothing to evaluate")
    cache = ImageCache()
    size = (info.input_height, info.input_width)
    per_member = [
        detect_images(
            member, lambda i: cache.get(dataset.image_uris[i]), len(dataset), size, plan.training.eval_batch_size
        )
        for member in models
    ]
    truths = [GroundTruth(*dataset.boxes_of(row)) for row in range(len(dataset))]
    predictions, ensemble_report = per_member[0], None
    if len(models) > 1:
        sizes = [(int(image.shape[-1]), int(image.shape[-2])) for image in map(cache.get, dataset.image_uris)]
        predictions, ensemble_report = _ensemble(per_member, truths, info, sizes)
    scores = detection_metrics(predictions, truths, info.classes, info.operating_threshold)
    points = operating_points(predictions, truths, info.classes, OPERATING_POINTS)
    metrics = {f"test_{key.replace('/', '_')}": float(value) for key, value in scores.items()}
    for point, figures in points.items():
        metrics |= {f"test_{point}_{name}": float(value) for name, value in figures.items()}
    if ensemble_report is not None:
        for member in ensemble_report["members"]:
            metrics |= {f"test_member_{member['member']}_{key}": member[key] for key in ("map50", "map")}
    metrics["test_images"] = float(len(dataset))
    metrics["test_boxes"] = float(len(dataset.boxes))
    tta_report: dict[str, Any] | None = None
    if plan.evaluation.tta is not None:
        tta = plan.evaluation.tta
        images = [cache.get(uri) for uri in dataset.image_uris]
        tta_scores = detection_metrics(
            _tta_detections(model, images, size, tta, info.detector.max_detections),
            truths,
            info.classes,
            info.operating_threshold,
        )
        metrics |= {f"test_tta_{key.replace('/', '_')}": float(value) for key, value in tta_scores.items()}
        timed = images[:LATENCY_IMAGES]
        metrics["test_latency_ms_per_image"] = _ms_per_image(
            lambda image: detect_images(model, lambda _: image, 1, size, 1), timed
        )
        metrics["test_tta_latency_ms_per_image"] = _ms_per_image(
            lambda image: _tta_detections(model, [image], size, tta, info.detector.max_detections), timed
        )
        tta_report = {"settings": tta.model_dump(), "map50": tta_scores["map50"], "map": tta_scores["map"]}
    ap50 = {name.split("/", 1)[1]: value for name, value in scores.items() if name.startswith("ap50/")}
    per_class = {name: {"ap50": value} for name, value in ap50.items()}
    metrics |= per_class_figures(plan.requirements, per_class, "test_", "the detector")
    gates = check_gates(plan.evaluation.gates, metrics)
    passed = all(gate["passed"] for gate in gates)
    report: dict[str, Any] = {
        "kind": "detection",
        "classes": info.classes,
        "map50": scores["map50"],
        "map": scores["map"],
        "operating_threshold": info.operating_threshold,
        "precision": scores["precision"],
        "recall": scores["recall"],
        "f1": scores["f1"],
        "ap50": ap50,
        "operating_points": points,
        "worst_class": dict(sorted(((v, k) for k, v in ap50.items()))[:3]) if ap50 else {},
        "images": len(dataset),
        "boxes": len(dataset.boxes),
        "split": split,
        "gates": gates,
        "requirements": measure_requirements(plan.requirements, metrics),
        "passed": passed,
        "dataset_version": dataset.info.version_id,
        "reference_profile": None,
        "tta": tta_report,
        "ensemble": ensemble_report,
    }
    artifacts = write_detection_report(plan, report, eval_dir)
    if not passed and plan.evaluation.fail_on_gate:
        worst = ", ".join(f"{name!r} AP50 {value:.3f}" for value, name in report["worst_class"].items())
        raise GateFailure(
            f"evaluation gates failed: {describe_failures(gates)} (worst classes: {worst}; "
            f"report: {eval_dir}/{REPORT_FILE})"
        )
    return EvaluateResult(metrics, report, gates, passed, artifacts)


def write_detection_report(plan: Plan, report: dict[str, Any], eval_dir: str) -> dict[str, str]:
    """evaluation.json and the operating points' precision/recall plot in `eval_dir`; {file: sha256}."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    os.makedirs(eval_dir, exist_ok=True)
    figure = Figure(figsize=(5.0, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, figures in report["operating_points"].items():
        axes.scatter(figures["recall"], figures["precision"], s=40)
        axes.annotate(f"{name} ({figures['score_threshold']:.2f})", (figures["recall"], figures["precision"]))
    axes.set_xlim(0, 1.05)
    axes.set_ylim(0, 1.05)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title(f"{plan.name}: {report['split']} mAP@0.5 {report['map50']:.3f}")
    plot_path = f"{eval_dir}/{OPERATING_PLOT}"
    figure.savefig(plot_path)
    return {
        REPORT_FILE: storage.write_text(f"{eval_dir}/{REPORT_FILE}", json.dumps(report, indent=2)),
        OPERATING_PLOT: storage.sha256_file(plot_path),
    }
