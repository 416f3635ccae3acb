"""The export step of a detector plan: verified FP32 ONNX -> precision variants -> one bundle.

As the image export (rooivalk.export.pipeline_step), with a detector's measures:
- the graph is the dense network (rooivalk.export.detector_onnx): letterboxed images (B, 3, H, W) in
  [0, 1] -> boxes (B, A, 4), scores (B, A, C); the post-process (per-level top-k, per-class NMS) runs
  in numpy, here and in `Predictor.detect` alike;
- the FP32 file is checked against the PyTorch model's own detections on the first test images:
  every detection scoring clear of the threshold must have a same-label box within BOX_TOLERANCE_PX
  on the other side, and the raw outputs must agree (boxes within BOX_TOLERANCE_PX, scores within
  export.max_abs_diff: a score sqrt(sigmoid(a) sigmoid(b)) moves at most as much as its logits do);
- each variant is scored by mAP@0.5 (COCO, pycocotools) on the test split, its boxes mapped back to
  each image's own pixels through its Letterbox, the preprocessing training and evaluation used
  (rooivalk.models.detector_inference). The model's max_accuracy_drop (export.models.model or
  export.max_accuracy_drop) is for a detector the largest FP32-minus-variant drop of mAP@0.5 that
  passes, as a fraction: 0.005 is half a point of mAP@0.5;
- latency is batch 1, the graph plus the post-process: what one frame costs a deployed detector. The
  baseline is the PyTorch eager model, torchvision's post-process included;
- with `tensorrt` in export.targets (a GPU node), FP16 / INT8 engines of the graph are built and scored
  by test mAP@0.5 the same way, gated by the same tolerance (rooivalk.export.detector_engines); their
  latency is the graph's alone;
- with export.temperature_scaling, per-class temperatures are fitted on the shipped variant
  (rooivalk.export.detector_temperature) and the bundle applies them after NMS.
With model.detector.ensemble the graph holds every member side by side and the post-process fuses their
detections (weighted boxes fusion, rooivalk.export.detector_postprocess.detections_from_outputs); variants,
verification and latency are the ensemble's. Folders as pipeline_step's: variants/model/,
bundles/model/ (preprocessing kind "detection"), export_report.json.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rooivalk.data.detection_dataset import DetectionDataset, load_detection_dataset
from rooivalk.evaluation.gates import check_gates
from rooivalk.export.benchmark import measure_latency, ort_session, torch_runner
from rooivalk.export.detector_engines import detector_engine_inputs
from rooivalk.export.detector_onnx import (
    INPUT_NAME,
    OUTPUT_NAMES,
    export_detector_onnx,
    read_level_sizes,
    verify_detector_onnx,
)
from rooivalk.export.detector_postprocess import bundle_postprocess
from rooivalk.export.detector_temperature import DetectorCalibration, calibrate_detector
from rooivalk.export.export_result import ExportResult
from rooivalk.export.predictor import detect_letterboxed
from rooivalk.export.selection import ModelExport, build_variants, score_variants
from rooivalk.export.shipping import (
    REPORT_FILE,
    ExportError,
    budget_gates,
    build_engines,
    calibration_source,
    environment,
    export_folders,
    output_location,
    prune_variants,
    publish_variants,
    raise_on_failed_gates,
    report_settings,
    require_targets,
    seeded_subset,
    ship_bundle,
    write_report,
)
from rooivalk.models.detection_metrics import Detections, GroundTruth, detection_metrics, operating_points
from rooivalk.models.detector import Detector
from rooivalk.models.detector_artifact import DetectorInfo, load_detector_members
from rooivalk.models.detector_inference import ImageCache, letterboxed_batch
from rooivalk.models.letterbox import LETTERBOX_FILL, Letterbox
from rooivalk.plan import Plan

log = logging.getLogger(__name__)

MODEL = "model"
METRIC = "map50"  # what a detector's variants are scored and gated by: COCO mAP@0.5 on the test split
VERIFY_SAMPLES = 8
BATCH = 16  # images per ONNX Runtime call while scoring (a letterboxed 384 x 640 image is 2.9 MB)
# ONNX vs PyTorch, letterbox pixels. float32 disagreement (kernel order, fused convs) is relative, 1e-6 to
# 1e-5 of a box's extent: measured 1.1e-4 px on a trained model at 96 x 160 and 2.3e-3 px on a random
# head at 64 x 96 (every location's raw box), so ~0.02 px at the largest input, 2048 px. An export fault
# (anchors, padding, normalization, a stride, a swapped coordinate) moves boxes by a pixel or more.
BOX_TOLERANCE_PX = 0.05


class _Images:
    """A split's images, decoded once (ImageCache), letterboxed batch by batch as evaluation does."""

    def __init__(self, dataset: DetectionDataset, size: tuple[int, int], cache: ImageCache) -> None:
        self.dataset, self.size, self.cache = dataset, size, cache

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, indices: Sequence[int]) -> tuple[np.ndarray, list[Letterbox]]:
        """float32 (B, 3, H, W) in [0, 1] and each image's placement."""
        images, placements = letterboxed_batch([self.cache.get(self.dataset.image_uris[i]) for i in indices], self.size)
        return images.numpy(), placements

    def truths(self) -> list[GroundTruth]:
        return [GroundTruth(*self.dataset.boxes_of(i)) for i in range(len(self))]


def _test_split(dataset: DetectionDataset) -> str:
    for split in ("test", "val"):
        if len(dataset.subset(split)):
            if split != "test":
                log.warning("dataset has no test split; export mAP is measured on %r", split)
            return split
    raise ExportError(f"dataset {dataset.info.version_id}: no test or val images to measure export mAP on")


def _verify(
    plan: Plan,
    models: list[Detector],
    settings: dict[str, Any],
    fp32: Path,
    images: np.ndarray,
    say: Callable[[str], None],
) -> dict[str, Any]:
    check = verify_detector_onnx(models, fp32, images, tolerance=BOX_TOLERANCE_PX, settings=settings)
    problems = []
    if check["unmatched"]:
        problems.append(f"{check['unmatched']} detection(s) without a same-label box within {BOX_TOLERANCE_PX} px")
    if not check["raw_boxes_max_abs_diff"] <= BOX_TOLERANCE_PX:  # `not <=` also catches NaN
        problems.append(f"max |box difference| {check['raw_boxes_max_abs_diff']:.3g} px > {BOX_TOLERANCE_PX} px")
    if not check["raw_scores_max_abs_diff"] <= plan.export.max_abs_diff:
        problems.append(
            f"max |score difference| {check['raw_scores_max_abs_diff']:.3g} > export.max_abs_diff "
            f"{plan.export.max_abs_diff:.3g}"
        )
    if problems:
        fp32.unlink()  # an unverified model must not look like an artifact
        raise ExportError(
            f"ONNX export of the detector does not match PyTorch on {check['images']} test images: "
            f"{'; '.join(problems)} ({fp32.name})"
        )
    say(
        f"ONNX FP32 verified on {check['images']} images: {check['matched']} detections matched, max |box diff| "
        f"{check['box_max_abs_diff']:.2e} px, max |score diff| {check['raw_scores_max_abs_diff']:.2e}"
    )
    if not check["detections_pytorch"]:
        log.warning("the detector finds nothing on the verification images: only its raw outputs were compared")
    return check


def _agreement(classes: list[str], threshold: float) -> Callable[[Any, Any], float]:
    """F1 of a variant's detections against FP32's, both kept at the operating threshold, matched at IoU 0.5."""

    def agreement(found: list[Detections], reference: list[Detections]) -> float:
        truths = [GroundTruth(d.boxes[d.scores >= threshold], d.labels[d.scores >= threshold]) for d in reference]
        if not any(len(t) for t in truths) and not any((d.scores >= threshold).any() for d in found):
            return 1.0  # both find nothing
        return operating_points(found, truths, classes, {"agreement": threshold})["agreement"]["f1"]

    return agreement


def _check_calibration_splits(plan: Plan, dataset: DetectionDataset, split: str) -> None:
    """Per-class temperatures are fitted on val and measured on test: both must exist and differ."""
    if plan.export.temperature_scaling and (split != "test" or not len(dataset.subset("val"))):
        sizes = ", ".join(f"{name} {len(dataset.subset(name))}" for name in ("train", "val", "test"))
        raise ExportError(
            f"export.temperature_scaling: dataset {dataset.info.version_id} needs a val split to fit the "
            f"per-class temperatures on and a test split to measure them on (it has {sizes} images)"
        )


def _load(model_dir: str) -> tuple[list[Detector], DetectorInfo]:
    """The detector's members (one without an ensemble) and its info."""
    members, info = load_detector_members(model_dir)
    models = [model for model in members if isinstance(model, Detector)]
    assert len(models) == len(members)
    return models, info


def _calibrate(
    plan: Plan,
    choice: ModelExport,
    info: DetectorInfo,
    val: _Images,
    predict: Callable[[Any, _Images, Sequence[int]], list[Detections]],
    test: tuple[list[Detections], list[GroundTruth]],
    folder: Path,
    say: Callable[[str], None],
) -> DetectorCalibration:
    """Per-class temperatures of the shipped variant, fitted on a seeded subset of the validation images
    (export.temperature_images) and measured on its `test` detections; its figures join choice.measured.
    None fitted without export.temperature_scaling."""
    if not plan.export.temperature_scaling:
        return DetectorCalibration()
    rows = seeded_subset(len(val), plan.export.temperature_images).tolist()
    say(f"fitting per-class temperatures of {choice.chosen} on {len(rows)} validation images")
    truths = val.truths()
    validation = (predict(ort_session(choice.paths[choice.chosen]), val, rows), [truths[row] for row in rows])
    calibration = calibrate_detector(info.classes, info.operating_threshold, validation, test, folder, plan.name, say)
    choice.measured |= calibration.metrics
    return calibration


def _torch_members(models: list[Detector]) -> Callable[[torch.Tensor], object]:
    """PyTorch eager FP32 of every member with torchvision's post-process (the latency baseline; an
    ensemble's fusion is not in it)."""
    runners = [torch_runner(model) for model in models]
    return lambda batch: [run(batch) for run in runners]


def detector_metrics(check: dict[str, Any], choice: ModelExport, torch_fp32_ms: float) -> dict[str, float]:
    """A detector's export metrics, named as single_model_metrics names a classifier's (mAP@0.5 for accuracy)."""
    shipped, fp32 = choice.shipped, choice.scores["fp32"]
    return {
        "onnx_box_max_abs_diff": float(check["box_max_abs_diff"]),
        "onnx_raw_box_max_abs_diff": float(check["raw_boxes_max_abs_diff"]),
        "onnx_raw_score_max_abs_diff": float(check["raw_scores_max_abs_diff"]),
        "onnx_unmatched_detections": float(check["unmatched"]),
        **choice.metrics(),
        "latency_torch_fp32_ms": torch_fp32_ms,
        "speedup_vs_torch": torch_fp32_ms / float(shipped.latency_ms or np.inf),
        f"system_fp32_test_{METRIC}": float(fp32.test_accuracy or 0.0),
        f"system_test_{METRIC}": float(shipped.test_accuracy or 0.0),
        f"system_{METRIC}_drop": float(shipped.accuracy_drop or 0.0),
        "end_to_end_latency_ms": float(shipped.latency_ms or 0.0),
        "end_to_end_latency_p95_ms": float(shipped.latency_p95_ms or 0.0),
    }


def _preprocessing(info: DetectorInfo, settings: dict[str, Any], level_sizes: list[int]) -> dict[str, Any]:
    return {
        "kind": "detection",
        "input_height": info.input_height,
        "input_width": info.input_width,
        "fill": LETTERBOX_FILL,
        "postprocess": {**settings, "level_sizes": level_sizes},
        "operating_threshold": info.operating_threshold,
    }


def export_detector(
    plan: Plan,
    model_dir: str,
    dataset_dir: str,
    export_dir: str,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export the detector in `model_dir`, ship its best variant, and measure everything.

    Raises ExportError when the FP32 ONNX detections differ from PyTorch's (see the module docstring),
    and GateFailure (after writing everything) when an export gate or latency budget fails and
    `plan.export.fail_on_gate` is set.
    """
    say = progress or log.info
    require_targets(plan)  # tensorrt needs a GPU node: fail before any work
    models, info = _load(model_dir)
    size = (info.input_height, info.input_width)
    dataset = load_detection_dataset(dataset_dir)
    cache = ImageCache()
    split = _test_split(dataset)
    _check_calibration_splits(plan, dataset, split)
    test = _Images(dataset.subset(split), size, cache)
    truths = test.truths()
    calibration_from = calibration_source(plan)
    source = _Images(dataset.subset(calibration_from.split), size, cache)
    if not len(source):
        raise ExportError(f"{dataset_dir}: no images in the calibration split {calibration_from.split!r}")

    def int8_images() -> np.ndarray:
        """The static INT8 calibration images (B, 3, H, W): built twice (ONNX INT8, TensorRT INT8) rather
        than held through the whole step (512 letterboxed 384 x 640 images are 1.5 GB)."""
        return source.batch(seeded_subset(len(source), plan.export.quantization.samples).tolist())[0]

    spec = plan.export.for_model(MODEL)
    with export_folders(export_dir) as (out_dir, scratch):
        variants_dir = out_dir / "variants" / MODEL
        variants_dir.mkdir(parents=True, exist_ok=True)
        fp32 = variants_dir / "model_fp32.onnx"
        ensemble = info.detector.ensemble is not None
        what = f"{len(models)} x {info.spec.architecture} (an ensemble)" if ensemble else info.spec.architecture
        say(f"exporting {what} to ONNX at {info.input_height} x {info.input_width}px")
        exported = export_detector_onnx(models, fp32, info.input_height, info.input_width)
        # Each member's own post-process and the fusion for an ensemble; what the bundle runs is verified.
        settings = bundle_postprocess(models, info.detector)
        check = _verify(plan, models, settings, fp32, test.batch(range(min(VERIFY_SAMPLES, len(test))))[0], say)
        levels = read_level_sizes(fp32) or exported["level_sizes"]
        int8 = {INPUT_NAME: int8_images()}
        paths, failures = build_variants(MODEL, fp32, variants_dir, spec, int8, plan.export.quantization, say)
        del int8
        sample = test.batch([0])[0]  # (1, 3, H, W)

        def run(session: Any, images: np.ndarray, placements: Sequence[Letterbox] | None = None) -> list[Detections]:
            return detect_letterboxed(session, images, settings, levels, placements)

        def time(session: Any) -> Any:
            runs, warmup = plan.export.latency_runs, plan.export.latency_warmup
            return measure_latency(lambda images: run(session, images), sample, runs, warmup)

        def predict(session: Any, split: _Images = test, rows: Sequence[int] | None = None) -> list[Detections]:
            """The session's detections of the split's images (`rows`, default all) in their own pixels."""
            rows = list(range(len(split))) if rows is None else list(rows)
            found: list[Detections] = []
            for start in range(0, len(rows), BATCH):
                images, placements = split.batch(rows[start : start + BATCH])
                found += run(session, images, placements)  # in each image's own pixels
            return found

        scored: list[dict[str, float]] = []  # per variant in `paths` order, which score_variants keeps
        predicted: list[list[Detections]] = []  # the same variants' test detections

        def score(found: list[Detections]) -> float:
            predicted.append(found)
            scored.append(detection_metrics(found, truths, info.classes, info.operating_threshold))
            return scored[-1][METRIC]

        agreement = _agreement(info.classes, info.operating_threshold)
        count = np.zeros(len(test))  # score_variants counts the test images by it
        choice = score_variants(MODEL, paths, failures, count, predict, time, spec, say, score, agreement, METRIC)
        say("timing PyTorch eager FP32 at batch 1 with its post-process (the baseline)")
        torch_ms = measure_latency(
            _torch_members(models), torch.from_numpy(sample), plan.export.latency_runs, plan.export.latency_warmup
        ).median_ms
        measured = dict(zip(paths, scored, strict=True))
        found_by = dict(zip(paths, predicted, strict=True))  # before prune_variants drops entries of `paths`
        prune_variants(choice)
        engines_dir = scratch / "engines"
        engines_dir.mkdir()
        # Before the temperatures join `settings`: engines are scored as the ONNX variants were.
        engine_files = build_engines(
            plan,
            choice,
            engines_dir,
            lambda: detector_engine_inputs(
                test, truths, info.classes, info.operating_threshold, settings, levels, int8_images()
            ),
            say,
        )
        val = _Images(dataset.subset("val"), size, cache)
        calibration = _calibrate(plan, choice, info, val, predict, (found_by[choice.chosen], truths), scratch, say)
        if calibration.temperatures is not None:
            settings |= {"class_temperatures": calibration.temperatures, "class_biases": calibration.biases}
        metrics = detector_metrics(check, choice, torch_ms)
        shipped = measured[choice.chosen]
        # The shipped ONNX variant's own figures, named apart from the evaluate step's PyTorch test_* ones.
        metrics |= {
            f"{MODEL}_shipped_{key.replace('/', '_')}": float(value) for key, value in shipped.items() if key != METRIC
        }
        gates = check_gates(plan.export.gates, metrics, missing_fails=True)
        gates += budget_gates(plan, [choice], metrics["end_to_end_latency_p95_ms"])
        bundle_uri = output_location(out_dir, export_dir, f"bundles/{MODEL}")
        preprocessing = _preprocessing(info, settings, levels)
        metadata = {
            "plan_digest": plan.digest(),
            "dataset_version": info.dataset_version,
            "architecture": f"{info.spec.family} {info.spec.architecture}",
            "ensemble_members": len(models),
            **environment(),
        }
        artifacts = ship_bundle(
            bundle_uri,
            choice,
            info.classes,
            preprocessing,
            1.0,
            metadata,
            {**calibration.files, **engine_files},
            logits_output=OUTPUT_NAMES[1],
        )
        report = {
            "metrics": metrics,
            "gates": gates,
            "passed": all(gate["passed"] for gate in gates),
            "models": {MODEL: choice.report()},
            "verification": {MODEL: {**check, "box_tolerance_px": BOX_TOLERANCE_PX}},
            "test_metrics": measured,
            "evaluation_split": split,
            "operating_threshold": info.operating_threshold,
            "postprocess": preprocessing["postprocess"],
            "calibration": calibration.report,
            **report_settings(plan, calibration_from),
            "dataset_version": info.dataset_version,
        }
        artifacts |= publish_variants(out_dir, MODEL, export_dir)
        artifacts[REPORT_FILE] = write_report(out_dir, export_dir, report)
    say(f"export done: {choice.summary()}; bundle {bundle_uri}")
    result = ExportResult(metrics, artifacts, gates, [choice], {MODEL: bundle_uri})
    raise_on_failed_gates(plan, gates, artifacts[REPORT_FILE])
    return result
