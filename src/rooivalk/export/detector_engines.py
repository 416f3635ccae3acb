"""TensorRT engines of a detector: scored by test mAP@0.5 as its ONNX variants are, for build_engines.

An engine computes the detector's dense graph (rooivalk.export.detector_onnx): letterboxed images
(B, 3, H, W) in [0, 1] -> boxes (B, A, 4), scores (B, A, C). Its outputs take the very path an ONNX
variant's take in the export step: `predictor.detect_letterboxed` itself (the bundle's post-process,
whatever `settings` holds), fed through an adapter with an ONNX Runtime session's `run`; boxes mapped
back to each test image's own pixels through its Letterbox; `detection_metrics(...)["map50"]` against
the test truths. So shipping.build_engines gates an engine's mAP@0.5 drop against the FP32 ONNX file's
with the model's tolerance, and records tensorrt_<precision>_test_map50 and _map50_drop.

Latency (build_engines: engine_latency at batch 1 on `sample`) is the dense graph alone on the GPU;
the numpy post-process, which a deployment runs on the host, is not in that figure (an ONNX variant's
latency includes it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from rooivalk.export.detector_onnx import INPUT_NAME
from rooivalk.export.predictor import detect_letterboxed
from rooivalk.export.shipping import EngineInputs, EngineRun
from rooivalk.models.detection_metrics import Detections, GroundTruth, detection_metrics
from rooivalk.models.letterbox import Letterbox

__all__ = ["BATCH", "METRIC", "LetterboxedImages", "detector_engine_inputs", "engine_detections", "map50_scorer"]

METRIC = "map50"  # detection_metrics' key, as detector_export's METRIC
BATCH = 16  # test images letterboxed per scorer step (in_batches splits them further by max_batch)


class LetterboxedImages(Protocol):
    """A split's images letterboxed on demand (detector_export's _Images is one)."""

    def __len__(self) -> int: ...

    def batch(self, indices: Sequence[int]) -> tuple[np.ndarray, Sequence[Letterbox]]:
        """float32 (B, 3, H, W) in [0, 1] and each image's placement."""
        ...


class _RunSession:
    """An EngineRun behind the `run(output_names, feeds)` of an ONNX Runtime session."""

    def __init__(self, run: EngineRun) -> None:
        self._run = run

    def run(self, names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        outputs = self._run(feeds)
        return [outputs[name] for name in names]


def engine_detections(
    run: EngineRun,
    images: LetterboxedImages,
    settings: Mapping[str, Any],
    level_sizes: Sequence[int] | None,
    batch: int = BATCH,
) -> list[Detections]:
    """Detections of every image in `images` by the dense graph behind `run`, in each image's original
    pixels, post-processed with `settings` (detector_postprocess.detections_from_outputs's) as
    detect_letterboxed does."""
    session = _RunSession(run)
    found: list[Detections] = []
    for start in range(0, len(images), batch):
        pixels, placements = images.batch(range(start, min(start + batch, len(images))))
        found += detect_letterboxed(session, pixels, settings, level_sizes, placements)  # in each image's pixels
    return found


def map50_scorer(
    images: LetterboxedImages,
    truths: Sequence[GroundTruth],
    classes: Sequence[str],
    operating_threshold: float,
    settings: Mapping[str, Any],
    level_sizes: Sequence[int] | None,
    batch: int = BATCH,
) -> Callable[[EngineRun], float]:
    """EngineInputs.score of a detector: the test mAP@0.5 of the graph behind an EngineRun. `settings`
    is copied now: later additions (e.g. the bundle's class temperatures) do not reach the score."""
    fixed = dict(settings)

    def score(run: EngineRun) -> float:
        found = engine_detections(run, images, fixed, level_sizes, batch)
        return float(detection_metrics(found, truths, classes, operating_threshold)[METRIC])

    return score


def detector_engine_inputs(
    images: LetterboxedImages,
    truths: Sequence[GroundTruth],
    classes: Sequence[str],
    operating_threshold: float,
    settings: Mapping[str, Any],
    level_sizes: Sequence[int] | None,
    calibration: np.ndarray,
    batch: int = BATCH,
) -> EngineInputs:
    """build_engines' inputs for a detector: the test split `images` (with `truths`, one per image)
    scored by mAP@0.5; `calibration`: letterboxed images (N, 3, H, W) for the INT8 QDQ model;
    the first test image (batch 1) for latency."""
    if not len(images) or len(truths) != len(images):
        raise ValueError(f"{len(images)} test images with {len(truths)} ground truths: need as many, at least one")
    return EngineInputs(
        sample={INPUT_NAME: images.batch([0])[0]},
        calibration={INPUT_NAME: calibration},
        score=map50_scorer(images, truths, classes, operating_threshold, settings, level_sizes, batch),
        metric=METRIC,
    )
