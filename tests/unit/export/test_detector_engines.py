"""rooivalk.export.detector_engines and shipping.build_engines' scorer: a detector's engines scored by mAP@0.5.

There is no GPU and no TensorRT on CPU machines. An engine computes the detector's dense graph, so here
an ONNX Runtime session on the same FP32 file stands in for the engine run (and, in the build_engines
tests, mock build_engine / engine_outputs / engine_latency replace rooivalk.export.tensorrt's). Real
engines are built by the GPU tests at the end, which skip where tensorrt_available() is false.

The detector is test_detector_export's untrained one with its score weights scaled down so its scores
spread over (0, 1); the ground truths are half of its own FP32 detections, moved half a pixel, so mAP@0.5
sits well inside (0, 1) and falls when a box is misplaced (e.g. left in letterbox pixels).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rooivalk.data.simulators.detection_frames import simulate_detection_frames
from rooivalk.export import tensorrt
from rooivalk.export.benchmark import ort_session
from rooivalk.export.detector_engines import METRIC, detector_engine_inputs, map50_scorer
from rooivalk.export.detector_onnx import INPUT_NAME, OUTPUT_NAMES, export_detector_onnx
from rooivalk.export.detector_postprocess import postprocess_settings
from rooivalk.export.predictor import detect_letterboxed
from rooivalk.export.selection import ModelExport, VariantScore
from rooivalk.export.shipping import ENGINE_FILE, EngineInputs, EngineRun, build_engines, in_batches
from rooivalk.models.detection_metrics import Detections, GroundTruth, detection_metrics
from rooivalk.models.detector import Detector
from rooivalk.models.detector_artifact import load_detector
from rooivalk.models.detector_inference import letterboxed_batch, read_rgb
from rooivalk.models.letterbox import Letterbox
from rooivalk.plan import Plan
from rooivalk.plan.export import TensorRTSpec
from tests.unit.export.test_detector_export import CLASSES, HEIGHT, WIDTH, _model_dir, _plan

AVAILABLE, REASON = tensorrt.tensorrt_available()
needs_tensorrt = pytest.mark.skipif(not AVAILABLE, reason=REASON)
THRESHOLD = 0.5  # the operating threshold


class _Images:
    """Decoded uint8 images, letterboxed on demand: a LetterboxedImages."""

    def __init__(self, images: list[torch.Tensor]) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: Sequence[int]) -> tuple[np.ndarray, list[Letterbox]]:
        pixels, placements = letterboxed_batch([self.images[i] for i in indices], (HEIGHT, WIDTH))
        return pixels.numpy(), placements


@dataclass
class _Detector:
    fp32: Path
    settings: dict[str, Any]
    levels: list[int]
    images: _Images
    truths: list[GroundTruth]
    base: float  # mAP@0.5 of the FP32 file through ONNX Runtime, as the export step scores it


def _ort_run(path: Path) -> EngineRun:
    """An ONNX Runtime session with an engine run's signature: the same dense graph an engine computes."""
    session = ort_session(path, threads=1)
    names = [output.name for output in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(names, dict(feeds)), strict=True))


def _reference(path: Path, images: _Images, settings: Mapping[str, Any], levels: list[int]) -> list[Detections]:
    """The export step's own path: detect_letterboxed on ONNX Runtime, all images in one call, boxes
    mapped to each image's pixels through its Letterbox."""
    pixels, placements = images.batch(range(len(images)))
    found = detect_letterboxed(ort_session(path, threads=1), pixels, settings, levels)
    return [
        Detections(p.boxes_to_original(torch.from_numpy(d.boxes)).numpy(), d.scores, d.labels)
        for d, p in zip(found, placements, strict=True)
    ]


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Detector]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a busy 2-core runner
    root = tmp_path_factory.mktemp("detector-engines")
    model, _ = load_detector(_model_dir(root, "unused"))
    assert isinstance(model, Detector)
    head: Any = model.fcos.head
    with torch.no_grad():  # test_detector_export's head saturates its scores near 1: spread them
        head.classification_head.cls_logits.weight.mul_(0.3)
        head.regression_head.bbox_ctrness.weight.mul_(0.3)
    exported = export_detector_onnx(model, root / "model_fp32.onnx", HEIGHT, WIDTH)
    # Two sizes other than the input's: letterboxing scales and pads (top/bottom, then left/right).
    simulate_detection_frames(root / "wide", "shapes", 3, 120, 70, seed=0, negatives=0)
    simulate_detection_frames(root / "tall", "shapes", 3, 80, 100, seed=1, negatives=0)
    files = sorted((root / "wide" / "images").iterdir()) + sorted((root / "tall" / "images").iterdir())
    images = _Images([read_rgb(str(path)) for path in files])
    settings, levels = dict(postprocess_settings(model)), list(exported["level_sizes"])
    reference = _reference(root / "model_fp32.onnx", images, settings, levels)
    truths = []
    for found in reference:
        keep = np.flatnonzero(found.scores >= THRESHOLD)[::2]
        truths.append(GroundTruth(found.boxes[keep] + 0.5, found.labels[keep]))
    base = detection_metrics(reference, truths, CLASSES, THRESHOLD)[METRIC]
    yield _Detector(root / "model_fp32.onnx", settings, levels, images, truths, base)
    torch.set_num_threads(threads)


def test_the_scorer_gives_the_export_steps_map50_whatever_the_batching(detector: _Detector) -> None:
    assert 0.2 < detector.base < 0.8  # a mAP that a misplaced box would move
    run = _ort_run(detector.fp32)
    for batch, max_batch in ((16, 16), (4, 3), (2, 1)):
        score = map50_scorer(
            detector.images, detector.truths, CLASSES, THRESHOLD, detector.settings, detector.levels, batch
        )
        assert score(in_batches(run, max_batch)) == detector.base, (batch, max_batch)


def test_boxes_left_in_letterbox_pixels_lose_map(detector: _Detector) -> None:
    """The scorer maps boxes to each image's pixels: the same detections unmapped score far lower."""
    pixels, _ = detector.images.batch(range(len(detector.images)))
    unmapped = detect_letterboxed(ort_session(detector.fp32, threads=1), pixels, detector.settings, detector.levels)
    assert detection_metrics(unmapped, detector.truths, CLASSES, THRESHOLD)[METRIC] < detector.base - 0.2


def test_in_batches_slices_rows_and_concatenates_outputs() -> None:
    seen: list[int] = []

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(len(feeds["x"]))
        return {"double": feeds["x"] * 2, "sum": feeds["x"] + feeds["y"]}

    x, y = np.arange(7.0), np.ones(7)
    out = in_batches(run, 3)({"x": x, "y": y})
    assert seen == [3, 3, 1]
    np.testing.assert_array_equal(out["double"], x * 2)
    np.testing.assert_array_equal(out["sum"], x + 1)
    with pytest.raises(ValueError, match="at least one row"):
        in_batches(run, 3)({"x": x[:0], "y": y[:0]})
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        in_batches(run, 0)


def test_detector_engine_inputs(detector: _Detector) -> None:
    calibration = detector.images.batch(range(3))[0]
    settings = dict(detector.settings)
    inputs = detector_engine_inputs(
        detector.images, detector.truths, CLASSES, THRESHOLD, settings, detector.levels, calibration
    )
    settings["score_threshold"] = 2.0  # later changes (the export step adds class temperatures) do not count
    assert inputs.metric == "map50"
    assert inputs.sample[INPUT_NAME].shape == (1, 3, HEIGHT, WIDTH)
    assert inputs.calibration[INPUT_NAME] is calibration
    assert inputs.score is not None
    assert inputs.score(in_batches(_ort_run(detector.fp32), 4)) == detector.base
    with pytest.raises(ValueError, match="6 test images with 5 ground truths"):
        detector_engine_inputs(
            detector.images, detector.truths[:5], CLASSES, THRESHOLD, detector.settings, detector.levels, calibration
        )


# build_engines with TensorRT mocked: no GPU and no TensorRT here ------------------------------------


class _MockTensorRT:
    """Mocks of rooivalk.export.tensorrt's build_engine, engine_outputs and engine_latency (no GPU or
    TensorRT here). A "built" engine is a file naming its source ONNX, which ONNX Runtime runs; the ONNX
    checks TensorRT's build makes first (Q/DQ form, profile shapes) are the real ones. `broken`
    precisions give engines whose scores are all 0; latencies are `latency_ms` by precision."""

    def __init__(self, max_batch: int, latency_ms: Mapping[str, float], broken: Sequence[str] = ()) -> None:
        self.max_batch, self.latency_ms, self.broken = max_batch, latency_ms, set(broken)
        self.built: list[tuple[str, str]] = []  # (precision, source file name)
        self.rows: list[int] = []  # rows per engine_outputs call

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(tensorrt, "build_engine", self.build_engine)
        monkeypatch.setattr(tensorrt, "engine_outputs", self.engine_outputs)
        monkeypatch.setattr(tensorrt, "engine_latency", self.engine_latency)

    def build_engine(
        self, source: Path, engine: Path, precision: str, max_batch: int = 32, workspace_mb: int = 2048
    ) -> Path:
        tensorrt.check_engine_source(source, precision)
        assert all(shape["max"][0] == max_batch for shape in tensorrt.profile_shapes(source, max_batch).values())
        engine.write_text(json.dumps({"source": str(source), "precision": precision}))
        tensorrt.sidecar_path(engine).write_text("{}")
        self.built.append((precision, source.name))
        return engine

    def engine_outputs(self, engine: Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        built = json.loads(engine.read_text())
        rows = len(next(iter(feeds.values())))
        assert rows <= self.max_batch
        self.rows.append(rows)
        outputs = _ort_run(Path(built["source"]))(feeds)
        if built["precision"] in self.broken:
            outputs[OUTPUT_NAMES[-1]] = np.zeros_like(outputs[OUTPUT_NAMES[-1]])
        return outputs

    def engine_latency(self, engine: Path, feeds: Mapping[str, np.ndarray], runs: int, warmup: int) -> dict[str, float]:
        assert len(next(iter(feeds.values()))) == 1
        median = self.latency_ms[json.loads(engine.read_text())["precision"]]
        return {"median_ms": median, "p95_ms": median * 1.5, "runs": runs}


def _tensorrt_plan(precisions: list[str], max_batch: int) -> Plan:
    plan = _plan()  # validation refuses a detector plan with the tensorrt target, so it is set after
    plan.export.targets = ["onnxruntime", "tensorrt"]
    plan.export.tensorrt = TensorRTSpec.model_validate({"precisions": precisions, "max_batch": max_batch})
    return plan


def _choice(fp32: Path, base: float, tolerance: float, metric: str) -> ModelExport:
    scores = {"fp32": VariantScore("fp32", fp32.name, test_accuracy=base, accuracy_drop=0.0, passed=True)}
    return ModelExport("model", tolerance, None, scores, {"fp32": fp32}, metric=metric)


def _engine_inputs(detector: _Detector, calibration: np.ndarray) -> Callable[[], EngineInputs]:
    """build_engines' engine_inputs for the test detector: its test images scored by mAP@0.5."""
    return partial(
        detector_engine_inputs,
        detector.images,
        detector.truths,
        CLASSES,
        THRESHOLD,
        detector.settings,
        detector.levels,
        calibration,
    )


def test_build_engines_scores_a_detector_by_map50_and_refuses_a_drop_past_tolerance(
    detector: _Detector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The INT8 engine is the faster, but its (mocked) scores are lost: its mAP drop is past tolerance.
    mock = _MockTensorRT(max_batch=4, latency_ms={"fp16": 2.0, "int8": 1.0}, broken=["int8"])
    mock.install(monkeypatch)
    plan = _tensorrt_plan(["fp16", "int8"], max_batch=4)
    choice = _choice(detector.fp32, detector.base, tolerance=0.005, metric=METRIC)
    calibration = detector.images.batch(range(4))[0]
    inputs = _engine_inputs(detector, calibration)
    said: list[str] = []
    files = build_engines(plan, choice, tmp_path, inputs, said.append)
    # INT8 is built from the TensorRT-flavoured QDQ file, which passes the engine source checks.
    assert mock.built == [("fp16", "model_fp32.onnx"), ("int8", "model_int8_tensorrt.onnx")]
    assert max(mock.rows) <= 4
    assert sum(mock.rows) == 2 * len(detector.images)
    measured = choice.measured
    assert measured["tensorrt_fp16_test_map50"] == detector.base  # the same graph: no drop
    assert measured["tensorrt_fp16_map50_drop"] == 0.0
    assert measured["tensorrt_int8_test_map50"] == 0.0
    assert measured["tensorrt_int8_map50_drop"] == detector.base
    assert not any("accuracy" in key for key in measured)
    assert (measured["tensorrt_latency_ms"], measured["tensorrt_latency_p95_ms"]) == (2.0, 3.0)
    assert files == {
        ENGINE_FILE: tmp_path / "model_fp16.engine",
        f"{ENGINE_FILE}.json": tmp_path / "model_fp16.engine.json",
    }
    assert any("TensorRT int8 engine not shipped: map50 drop" in line for line in said)
    assert choice.metrics()["model_tensorrt_fp16_test_map50"] == detector.base


def test_build_engines_ships_nothing_when_every_engine_drops_too_much(
    detector: _Detector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _MockTensorRT(max_batch=8, latency_ms={"fp16": 2.0}, broken=["fp16"]).install(monkeypatch)
    choice = _choice(detector.fp32, detector.base, tolerance=detector.base - 0.01, metric=METRIC)
    inputs = _engine_inputs(detector, detector.images.batch([0])[0])
    assert build_engines(_tensorrt_plan(["fp16"], 8), choice, tmp_path, inputs, lambda _: None) == {}
    assert choice.measured["tensorrt_fp16_map50_drop"] == detector.base
    assert "tensorrt_latency_ms" not in choice.measured


def test_build_engines_still_scores_a_classifier_by_accuracy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No scorer: the "logits" argmax against labels, under the classifier's metric names."""
    import onnx
    from onnx import TensorProto, helper

    weight = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "weight"], ["logits"])],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [onnx.numpy_helper.from_array(weight, "weight")],
    )
    fp32 = tmp_path / "model_fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(fp32))
    test = np.random.default_rng(1).standard_normal((10, 4)).astype(np.float32)
    labels = (test @ weight).argmax(1)
    labels[:3] = (labels[:3] + 1) % 3  # 7 of 10 right
    mock = _MockTensorRT(max_batch=4, latency_ms={"fp16": 1.0})
    mock.install(monkeypatch)
    choice = _choice(fp32, 0.7, tolerance=0.0, metric="accuracy")

    def inputs() -> EngineInputs:
        return EngineInputs(
            sample={"input": test[:1]}, calibration={"input": test}, test={"input": test}, labels=labels
        )

    files = build_engines(_tensorrt_plan(["fp16"], 4), choice, tmp_path, inputs, lambda _: None)
    assert mock.rows == [4, 4, 2]
    assert choice.measured["tensorrt_fp16_test_accuracy"] == pytest.approx(0.7)
    assert choice.measured["tensorrt_fp16_accuracy_drop"] == pytest.approx(0.0)
    assert set(files) == {ENGINE_FILE, f"{ENGINE_FILE}.json"}


# With TensorRT and a CUDA GPU ----------------------------------------------------------------------


@pytest.mark.gpu
@needs_tensorrt
def test_fp16_engine_map50_is_close_to_onnx_runtimes(detector: _Detector, tmp_path: Path) -> None:
    engine = tensorrt.build_engine(detector.fp32, tmp_path / "detector.fp16.engine", "fp16", max_batch=4)
    score = map50_scorer(detector.images, detector.truths, CLASSES, THRESHOLD, detector.settings, detector.levels)
    got = score(in_batches(partial(tensorrt.engine_outputs, engine), 4))
    assert abs(got - detector.base) <= 0.05, (got, detector.base)
    outputs = tensorrt.engine_outputs(engine, {INPUT_NAME: detector.images.batch([0])[0]})
    assert outputs[OUTPUT_NAMES[0]].shape == (1, sum(detector.levels), 4)
    assert outputs[OUTPUT_NAMES[1]].shape == (1, sum(detector.levels), len(CLASSES))


@pytest.mark.gpu
@needs_tensorrt
def test_build_engines_builds_fp16_and_int8_detector_engines(detector: _Detector, tmp_path: Path) -> None:
    choice = _choice(detector.fp32, detector.base, tolerance=1.0, metric=METRIC)  # every engine passes
    inputs = partial(
        detector_engine_inputs,
        detector.images,
        detector.truths,
        CLASSES,
        THRESHOLD,
        detector.settings,
        detector.levels,
        detector.images.batch(range(len(detector.images)))[0],
    )
    files = build_engines(_tensorrt_plan(["fp16", "int8"], 4), choice, tmp_path, inputs, lambda _: None)
    for precision in ("fp16", "int8"):
        assert 0 <= choice.measured[f"tensorrt_{precision}_test_map50"] <= 1
        assert choice.measured[f"tensorrt_{precision}_latency_ms"] > 0
    assert abs(choice.measured["tensorrt_fp16_map50_drop"]) <= 0.05
    assert files[ENGINE_FILE].is_file()
    assert json.loads(files[f"{ENGINE_FILE}.json"].read_text())["inputs"][INPUT_NAME]["max"] == [4, 3, HEIGHT, WIDTH]
