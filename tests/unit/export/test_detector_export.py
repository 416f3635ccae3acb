"""The detector's export step: a verified FP32 ONNX file, variants scored by mAP@0.5, a bundle that
`Predictor.detect` runs on images of any size with the PyTorch model's detections.

The model is not trained: a fresh FCOS head with its classification bias at 0 and spread weights (as
test_detector_onnx) finds boxes everywhere, which is all an export needs to be checked on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from rooivalk.data.detection_dataset import ingest_detection, load_detection_dataset
from rooivalk.data.detection_reader import read_yolo
from rooivalk.data.simulators.detection_frames import simulate_detection_frames
from rooivalk.export.bundle import BundleError, BundleInfo, io_specs, write_bundle
from rooivalk.export.detector_export import MODEL, export_detector
from rooivalk.export.export_result import ExportResult
from rooivalk.export.onnx_export import INPUT_NAME, OUTPUT_NAME, export_module
from rooivalk.export.predictor import Predictor
from rooivalk.export.shipping import REPORT_FILE
from rooivalk.models.detector_artifact import DetectorInfo, load_detector, save_detector
from rooivalk.models.detector_inference import detect_images, read_rgb
from rooivalk.models.registry import create_model
from rooivalk.plan import DetectorSpec, ModelSpec, Plan, validate_plan

HEIGHT, WIDTH = 64, 96
CLASSES = ["circle", "square", "triangle"]  # the shapes simulator's


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny tensors gain nothing from intra-op threads; on a busy 2-core runner they only wait.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _plan(**export: Any) -> Plan:
    raw = {
        "name": "detector-export",
        "data": {"source": "unused", "format": "yolo"},
        "model": {
            "family": "detector",
            "architecture": "fcos_tf_efficientnet_lite0",
            "detector": {"input_height": HEIGHT, "input_width": WIDTH, "fpn_channels": 64},
        },
        "export": {
            "precisions": ["fp32", "int8_static"],
            "quantization": {"samples": 8},
            "latency_runs": 100,
            "latency_warmup": 2,
            **export,
        },
    }
    return validate_plan(raw, origin="plan.yaml")


def _model_dir(root: Path, dataset_version: str) -> str:
    torch.manual_seed(0)
    spec = ModelSpec(
        family="detector",
        architecture="fcos_tf_efficientnet_lite0",
        detector=DetectorSpec(input_height=HEIGHT, input_width=WIDTH, fpn_channels=64),
    )
    model = create_model(spec, len(CLASSES))
    head = model.fcos.head
    with torch.no_grad():  # scores spread over (0, 1) and boxes with a size: few exact ties
        torch.nn.init.normal_(head.classification_head.cls_logits.weight, std=0.35)
        head.classification_head.cls_logits.bias.zero_()
        torch.nn.init.normal_(head.regression_head.bbox_ctrness.weight, std=0.35)
        torch.nn.init.normal_(head.regression_head.bbox_reg.weight, std=0.2)
        head.regression_head.bbox_reg.bias.fill_(1.0)
    info = DetectorInfo(
        spec=spec,
        classes=CLASSES,
        input_height=HEIGHT,
        input_width=WIDTH,
        mean=model.mean,
        std=model.std,
        operating_threshold=0.5,
        dataset_version=dataset_version,
        plan_digest="test",
    )
    save_detector(str(root / "model"), model, info)
    return str(root / "model")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, ExportResult]:
    root = tmp_path_factory.mktemp("detector-export")
    simulate_detection_frames(root / "frames", "shapes", 30, WIDTH, HEIGHT, seed=0, splits=(0.5, 0.2, 0.3))
    plan = _plan()
    ingest_detection(read_yolo(str(root / "frames")), str(root / "dataset"), plan.data.split, "frames")
    dataset_dir = str(root / "dataset")
    model_dir = _model_dir(root, load_detection_dataset(dataset_dir).info.version_id)
    result = export_detector(plan, model_dir, dataset_dir, str(root / "export"))
    return root, model_dir, dataset_dir, result


def test_the_report_scores_every_variant_by_map50(exported: tuple[Path, str, str, ExportResult]) -> None:
    root, _, _, result = exported
    report = json.loads((root / "export" / REPORT_FILE).read_text())
    choice = report["models"][MODEL]
    assert choice["metric"] == "map50"
    assert set(choice["variants"]) == {"fp32", "int8_static"}
    assert choice["shipped"] in choice["variants"]
    assert choice["variants"][choice["shipped"]]["reason"].startswith("shipped")
    for precision, variant in choice["variants"].items():
        assert 0 <= variant["test_map50"] <= 1
        assert variant["latency_ms"] > 0
        assert 0 <= variant["agreement"] <= 1
        assert result.metrics[f"model_{precision}_test_map50"] == variant["test_map50"]
    assert choice["variants"]["fp32"]["map50_drop"] == 0
    assert choice["variants"]["fp32"]["agreement"] == 1
    verification = report["verification"][MODEL]
    assert verification["unmatched"] == 0
    assert verification["matched"] > 0
    for key in ("system_fp32_test_map50", "system_test_map50", "system_map50_drop", "end_to_end_latency_p95_ms"):
        assert key in result.metrics
    shipped = choice["variants"][choice["shipped"]]
    assert result.metrics["system_map50_drop"] == pytest.approx(shipped["map50_drop"])
    assert report["evaluation_split"] == "test"
    assert result.passed
    assert result.bundles[MODEL] == str(root / "export" / "bundles" / MODEL)


def _fp32_predictor(root: Path, result: ExportResult) -> Predictor:
    """The shipped bundle, its model swapped for the FP32 file when INT8 shipped: detect() against PyTorch."""
    predictor = Predictor.load(result.bundles[MODEL])
    if predictor.info.precision != "fp32":
        from rooivalk.export.benchmark import ort_session

        predictor.session = ort_session(root / "export" / "variants" / MODEL / "model_fp32.onnx")
    return predictor


def test_detect_gives_the_pytorch_detections_in_image_pixels(exported: tuple[Path, str, str, ExportResult]) -> None:
    root, model_dir, dataset_dir, result = exported
    predictor = _fp32_predictor(root, result)
    assert predictor.kind == "detection"
    threshold = float(predictor.info.preprocessing["operating_threshold"])
    dataset = load_detection_dataset(dataset_dir).subset("test")
    frames = [read_rgb(uri) for uri in dataset.image_uris[:3]]
    # Three sizes in one call: the frame itself, shrunk, and enlarged with another aspect ratio.
    images = [
        frames[0],
        torch.nn.functional.interpolate(frames[1][None].float(), size=(40, 50)).round().byte()[0],
        torch.nn.functional.interpolate(frames[2][None].float(), size=(150, 120)).round().byte()[0],
    ]
    arrays = [image.permute(1, 2, 0).numpy() for image in images]
    found = predictor.detect([arrays[0], Image.fromarray(arrays[1]), arrays[2]])
    model, _ = load_detector(model_dir)
    expected = detect_images(model, lambda i: images[i], len(images), (HEIGHT, WIDTH), batch_size=2)
    assert sum(len(f["boxes"]) for f in found) > 0
    for array, mine, want in zip(arrays, found, expected, strict=True):
        kept = want.scores >= threshold
        clear = np.abs(want.scores - threshold) > 1e-3  # at the threshold either side may keep a box
        assert mine["boxes"].dtype == np.float32
        assert (mine["scores"] >= threshold).all()
        assert mine["class_names"] == [CLASSES[label] for label in mine["labels"]]
        assert (mine["boxes"][:, 2] <= array.shape[1]).all()
        assert (mine["boxes"][:, 3] <= array.shape[0]).all()
        for box, label in zip(want.boxes[kept & clear], want.labels[kept & clear], strict=True):
            close = (mine["labels"] == label) & (np.abs(mine["boxes"] - box).max(axis=1) <= 1.0)
            assert close.any(), (box, label)
        assert len(mine["boxes"]) == pytest.approx(int(kept.sum()), abs=int((kept & ~clear).sum()))


def test_score_threshold_overrides_the_operating_threshold(exported: tuple[Path, str, str, ExportResult]) -> None:
    root, _, dataset_dir, result = exported
    predictor = _fp32_predictor(root, result)
    image = read_rgb(load_detection_dataset(dataset_dir).image_uris[0]).permute(1, 2, 0).numpy()
    default, low, high = (predictor.detect([image], score_threshold=t)[0] for t in (None, 0.3, 0.99))
    assert len(low["scores"]) >= len(default["scores"]) >= len(high["scores"])
    assert (low["scores"] >= 0.3).all()
    assert predictor.detect([image[..., 0]])[0]["boxes"].shape[1] == 4  # grayscale (H, W) is repeated


def test_classifier_methods_refuse_a_detection_bundle_and_detect_refuses_bad_images(
    exported: tuple[Path, str, str, ExportResult],
) -> None:
    predictor = Predictor.load(exported[3].bundles[MODEL])
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for method in (predictor.predict, predictor.predict_proba, predictor.logits, predictor.preprocess, predictor.embed):
        with pytest.raises(
            BundleError, match=rf"is a detector.*: {method.__name__}\(\) is a classifier's; call detect"
        ):
            method(image[None])
    with pytest.raises(BundleError, match="detect.. takes uint8"):
        predictor.detect([image.astype(np.float32)])
    with pytest.raises(BundleError, match="no images given"):
        predictor.detect([])


def test_tensorrt_needs_a_gpu_node_and_says_so_before_any_work(exported: tuple[Path, str, str, ExportResult]) -> None:
    root, model_dir, dataset_dir, _ = exported
    from rooivalk.export.shipping import ExportError
    from rooivalk.export.tensorrt import tensorrt_available

    if tensorrt_available()[0]:
        pytest.skip("this node has TensorRT and a GPU: tests/unit/export/test_detector_engines.py builds engines")
    plan = _plan(targets=["onnxruntime", "tensorrt"])  # rooivalk validate takes it: engines build on GPU nodes
    with pytest.raises(ExportError, match="tensorrt.*GPU node"):
        export_detector(plan, model_dir, dataset_dir, str(root / "trt"))
    assert not (root / "trt").exists()  # refused before any work


def test_detect_refuses_a_classifier_bundle(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, len(CLASSES))).eval()
    path = tmp_path / "classifier.onnx"
    export_module(model, (torch.zeros(2, 3, 8, 8),), [INPUT_NAME], [OUTPUT_NAME], path)
    inputs, outputs = io_specs(path)
    preprocessing = {"kind": "image", "input_size": 8, "mean": [0.5] * 3, "std": [0.5] * 3, "in_chans": 3}
    info = BundleInfo(
        name="model", precision="fp32", labels=CLASSES, preprocessing=preprocessing, inputs=inputs, outputs=outputs
    )
    write_bundle(str(tmp_path / "bundle"), info, path)
    predictor = Predictor.load(str(tmp_path / "bundle"))
    with pytest.raises(BundleError, match=r"preprocessing.kind 'image', not a detector's.*call predict\(samples\)"):
        predictor.detect([np.zeros((8, 8, 3), np.uint8)])
