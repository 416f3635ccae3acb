"""ONNX export of the FCOS detector: dense graph with a dynamic batch, numpy post-process, verified; an
ensemble's members side by side, each post-processed with its own settings before their boxes fuse."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from rooivalk.export.detector_onnx import (
    INPUT_NAME,
    OUTPUT_NAMES,
    _DenseDetector,
    export_detector_onnx,
    read_level_sizes,
    verify_detector_onnx,
)
from rooivalk.export.detector_postprocess import (
    bundle_postprocess,
    detections_from_outputs,
    postprocess,
    postprocess_settings,
    with_candidate_threshold,
)
from rooivalk.models.box_fusion import fuse_members
from rooivalk.models.detector import Detector
from rooivalk.plan import DetectorSpec, ModelSpec

HEIGHT, WIDTH, CLASSES = 64, 96, 3


def _detector(seed: int = 0, **detector: Any) -> Detector:
    torch.manual_seed(seed)
    spec = ModelSpec(
        family="detector",
        architecture="fcos_tf_efficientnet_lite0",  # the default backbone: timm 'SAME' convs included
        pretrained=None,
        detector=DetectorSpec(input_height=HEIGHT, input_width=WIDTH, fpn_channels=64, **detector),
    )
    model = Detector(spec, CLASSES).eval()
    # A fresh head scores every location ~0.01 with zero-size boxes; spread the scores over (0, 1) and
    # give boxes a size so that thresholds, top-k and NMS all have work to do.
    with torch.no_grad():
        classification, regression = model.fcos.head.classification_head, model.fcos.head.regression_head
        torch.nn.init.normal_(classification.cls_logits.weight, std=0.35)  # 64 channels: logits of a few units
        classification.cls_logits.bias.zero_()
        torch.nn.init.normal_(regression.bbox_ctrness.weight, std=0.35)
        torch.nn.init.normal_(regression.bbox_reg.weight, std=0.2)
        regression.bbox_reg.bias.fill_(1.0)
    return model


def _images(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny tensors gain nothing from intra-op threads, and on a busy 2-core runner torch's OpenMP
    # barriers make each forward ~100x slower (measured: 2 s against 11 ms for the backbone).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Detector, Path, dict[str, Any]]:
    model = _detector()
    path = tmp_path_factory.mktemp("detector") / "detector.onnx"
    return model, path, export_detector_onnx(model, str(path), HEIGHT, WIDTH)


def test_export_declares_dynamic_batch_and_level_sizes(exported: tuple[Detector, Path, dict[str, Any]]) -> None:
    model, path, info = exported
    graph = onnx.load(str(path))
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [info["opset"]] == [18]
    assert [i.name for i in graph.graph.input] == [INPUT_NAME]
    assert [o.name for o in graph.graph.output] == OUTPUT_NAMES
    for value in [*graph.graph.input, *graph.graph.output]:
        assert not value.type.tensor_type.shape.dim[0].HasField("dim_value")  # symbolic batch
    # P3..P7 of 64 x 96: 8 x 12, 4 x 6, 2 x 3, 1 x 2, 1 x 1 locations.
    assert read_level_sizes(path) == info["level_sizes"] == [96, 24, 6, 2, 1]
    assert info["anchors"] == sum(info["level_sizes"])
    with pytest.raises(ValueError, match=r"1 detector\(s\) given for an ensemble of 2 members"):
        bundle_postprocess([model], DetectorSpec(ensemble={"members": 2}))


def test_onnx_detections_match_pytorch(exported: tuple[Detector, Path, dict[str, Any]]) -> None:
    model, path, _ = exported
    check = verify_detector_onnx(model, str(path), _images(3))
    assert check["detections_pytorch"] == check["detections_onnx"] > 0
    total = check["detections_pytorch"] + check["detections_onnx"]
    assert check["unmatched"] == 0
    assert check["matched"] + check["near_cutoff"] == total
    assert check["matched"] >= 0.95 * total  # misses only where ranking ties at the max_detections cut
    assert check["box_max_abs_diff"] < 1e-2  # pixels, on a 96 px wide image
    assert check["score_max_abs_diff"] < 1e-4
    assert check["raw_boxes_max_abs_diff"] < 1e-2
    assert check["raw_scores_max_abs_diff"] < 1e-3


def test_batch_of_one_matches_a_row_of_a_batch_of_three(exported: tuple[Detector, Path, dict[str, Any]]) -> None:
    _, path, _ = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = _images(3, seed=1).numpy()
    boxes, scores = session.run(OUTPUT_NAMES, {INPUT_NAME: images})
    assert boxes.shape == (3, 129, 4)
    assert scores.shape == (3, 129, CLASSES)
    for row in range(3):
        one_boxes, one_scores = session.run(OUTPUT_NAMES, {INPUT_NAME: images[row : row + 1]})
        np.testing.assert_allclose(one_boxes[0], boxes[row], atol=1e-3)
        np.testing.assert_allclose(one_scores[0], scores[row], atol=1e-4)


def test_postprocess_honours_threshold_and_max_detections(exported: tuple[Detector, Path, dict[str, Any]]) -> None:
    _, path, info = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boxes, scores = session.run(OUTPUT_NAMES, {INPUT_NAME: _images(2).numpy()})
    levels = info["level_sizes"]
    loose = postprocess(boxes, scores, 0.05, 0.6, 100, 1000, levels)
    strict = postprocess(boxes, scores, 0.6, 0.6, 5, 1000, levels)
    for wide, narrow in zip(loose, strict, strict=True):
        assert 0 < len(narrow) <= 5 < len(wide)
        assert (narrow.scores > 0.6).all()
        assert (np.diff(narrow.scores) <= 0).all()
        np.testing.assert_array_equal(narrow.scores, wide.scores[: len(narrow)])  # the same best, in order
        assert (narrow.boxes >= 0).all()
        assert (narrow.boxes[:, [2, 3]] <= [WIDTH, HEIGHT]).all()
    nothing = float(scores.max())  # scores must exceed the threshold
    assert [len(d) for d in postprocess(boxes, scores, nothing, 0.6, 100, 1000, levels)] == [0, 0]
    with pytest.raises(ValueError, match="disagree"):
        postprocess(boxes, scores, 0.05, 0.6, 100, 1000, [96, 24])


@pytest.mark.parametrize(("height", "width", "topk"), [(HEIGHT, WIDTH, 5), (HEIGHT, WIDTH, 1000), (70, 100, 1000)])
def test_postprocess_is_torchvisions_with_per_level_topk(
    exported: tuple[Detector, Path, dict[str, Any]], height: int, width: int, topk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The PyTorch dense network + postprocess against FCOS's own eval output: the same, also when
    # top-k binds on a level (topk 5) and when the input is padded to a multiple of 32 (70 x 100);
    # top-k over all levels at once (no level sizes) differs where it binds.
    model = exported[0]
    monkeypatch.setattr(model.fcos, "topk_candidates", topk)
    images = torch.rand(3, 3, height, width, generator=torch.Generator().manual_seed(2))
    dense = _DenseDetector(model, height, width).eval()
    with torch.inference_mode():
        expected = model(images)
        boxes, scores = dense(images)
    settings = postprocess_settings(model)
    got = postprocess(boxes.numpy(), scores.numpy(), **settings, level_sizes=dense.level_sizes)
    for want, have in zip(expected, got, strict=True):
        # Detections of equal score (up to an ulp) may come in either order: compare sorted rows.
        def rows(labels: Any, scores: Any, boxes: Any) -> np.ndarray:
            table = np.column_stack([np.asarray(labels), np.round(np.asarray(scores), 5), np.asarray(boxes)])
            return table[np.lexsort(table.T[::-1])]

        expected_rows = rows(want["labels"].numpy(), want["scores"].numpy(), want["boxes"].numpy())
        got_rows = rows(have.labels, have.scores, have.boxes)
        np.testing.assert_array_equal(expected_rows[:, 0], got_rows[:, 0])
        # Equal up to an ulp: vectorized and scalar sigmoid/sqrt may round the last bit differently.
        np.testing.assert_allclose(expected_rows[:, 1:], got_rows[:, 1:], rtol=1e-5, atol=1e-4)
    global_topk = postprocess(boxes.numpy(), scores.numpy(), **settings)
    same = [len(w["boxes"]) == len(g) for w, g in zip(expected, global_topk, strict=True)]
    assert all(same) == (topk == 1000)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # group_norm's batch-size check, traced
def test_opset_17_goes_through_the_torchscript_exporter(
    exported: tuple[Detector, Path, dict[str, Any]], tmp_path: Path
) -> None:
    model, path_18, _ = exported
    path = tmp_path / "detector17.onnx"
    info = export_detector_onnx(model, str(path), HEIGHT, WIDTH, opset=17)
    assert [o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert read_level_sizes(path) == info["level_sizes"]
    images = {INPUT_NAME: _images(2, seed=3).numpy()}
    old, new = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (path_18, path))
    for a, b in zip(old.run(OUTPUT_NAMES, images), new.run(OUTPUT_NAMES, images), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Detector], Path, dict[str, Any]]:
    members = [_detector(seed) for seed in (0, 1)]
    path = tmp_path_factory.mktemp("ensemble") / "ensemble.onnx"
    return members, path, export_detector_onnx(members, str(path), HEIGHT, WIDTH)


def test_an_ensemble_is_one_graph_whose_fused_detections_match_pytorchs(
    ensemble: tuple[list[Detector], Path, dict[str, Any]],
) -> None:
    members, path, info = ensemble
    assert info["members"] == 2
    assert info["anchors"] == 129
    assert read_level_sizes(path) == info["level_sizes"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = _images(2, seed=3)
    boxes, scores = session.run(OUTPUT_NAMES, {INPUT_NAME: images.numpy()})
    assert boxes.shape == (2, 2 * 129, 4)
    assert scores.shape == (2, 2 * 129, CLASSES)
    # Member k's locations are the k-th slice: each slice is that member's own graph.
    for k, member in enumerate(members):
        with torch.no_grad():
            want_boxes, want_scores = _DenseDetector(member, HEIGHT, WIDTH).eval()(images)
        np.testing.assert_allclose(boxes[:, k * 129 : (k + 1) * 129], want_boxes.numpy(), atol=1e-2)
        np.testing.assert_allclose(scores[:, k * 129 : (k + 1) * 129], want_scores.numpy(), atol=1e-3)
    # Settings without member_postprocess (a bundle written before members had their own): every member
    # runs the top-level post-process, here the members' shared one.
    fusion = {"members": 2, "weights": [3.0, 1.0], "iou_threshold": 0.5}
    settings = {**postprocess_settings(members[0]), "ensemble": fusion}
    check = verify_detector_onnx(members, str(path), images, settings=settings)
    assert check["detections_pytorch"] > 0
    assert check["unmatched"] == 0
    assert check["matched"] >= 0.95 * (check["detections_pytorch"] + check["detections_onnx"])
    # Fusing is not concatenating: the ensemble keeps fewer boxes than its members together.
    fused = detections_from_outputs(boxes, scores, settings, info["level_sizes"], (WIDTH, HEIGHT))
    alone = [
        postprocess(
            boxes[:, k * 129 : (k + 1) * 129],
            scores[:, k * 129 : (k + 1) * 129],
            **postprocess_settings(members[0]),
            level_sizes=info["level_sizes"],
        )
        for k in range(2)
    ]
    for image in range(2):
        assert 0 < len(fused[image]) < len(alone[0][image]) + len(alone[1][image])
        assert fused[image].scores.max() <= max(alone[0][image].scores.max(), alone[1][image].scores.max()) + 1e-6
    with pytest.raises(ValueError, match="do not split into 4 ensemble members"):
        detections_from_outputs(
            boxes,
            scores,
            {**settings, "ensemble": {**fusion, "members": 4, "weights": None}},
            info["level_sizes"],
            (WIDTH, HEIGHT),
        )


def _strict(member: Detector, most: int = 8) -> Detector:
    """`member`'s network with a post-process of its own (as an ensemble member whose overrides set
    model.detector.score_threshold 0.4, nms_iou 0.3, max_detections `most` is built): the same graph."""
    strict = copy.deepcopy(member)
    fcos = strict.fcos
    fcos.score_thresh, fcos.nms_thresh, fcos.detections_per_img, fcos.topk_candidates = 0.4, 0.3, most, 10 * most
    return strict


def test_each_member_is_post_processed_with_its_own_settings_before_fusion(
    ensemble: tuple[list[Detector], Path, dict[str, Any]],
) -> None:
    members, path, info = ensemble
    own = [members[0], _strict(members[1])]
    detector = DetectorSpec(ensemble={"members": 2, "weights": [1.0, 3.0], "iou_threshold": 0.5}, max_detections=50)
    settings = bundle_postprocess(own, detector)
    assert settings["ensemble"]["member_postprocess"] == [postprocess_settings(m) for m in own]
    assert settings["ensemble"]["member_postprocess"][1] == {
        "score_threshold": 0.4,
        "nms_iou": 0.3,
        "max_detections": 8,
        "topk": 80,
    }
    assert settings["max_detections"] == 50  # the fused boxes kept: the ensemble's model.detector
    images = _images(2, seed=3)
    check = verify_detector_onnx(own, str(path), images, settings=settings)
    assert check["detections_pytorch"] == check["detections_onnx"] > 0
    assert check["unmatched"] == 0
    # The bundle's post-process is each member's own, then fusion at the ensemble's max_detections.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boxes, scores = session.run(OUTPUT_NAMES, {INPUT_NAME: images.numpy()})
    levels = info["level_sizes"]
    fused = detections_from_outputs(boxes, scores, settings, levels, (WIDTH, HEIGHT))
    alone = [
        postprocess(
            boxes[:, k * 129 : (k + 1) * 129], scores[:, k * 129 : (k + 1) * 129], **own_settings, level_sizes=levels
        )
        for k, own_settings in enumerate(settings["ensemble"]["member_postprocess"])
    ]
    assert all(len(found) <= 8 and (found.scores > 0.4).all() for found in alone[1])
    expected = fuse_members(alone, [(WIDTH, HEIGHT)] * 2, [1.0, 3.0], 0.5, 50)
    for want, have in zip(expected, fused, strict=True):
        np.testing.assert_array_equal(want.scores, have.scores)
        np.testing.assert_array_equal(want.boxes, have.boxes)
    # Post-processing member 1 with the shared settings (what bundles did before) is not what its
    # PyTorch model does: the verification says so.
    shared = {**settings, "ensemble": {**settings["ensemble"], "member_postprocess": None}}
    assert verify_detector_onnx(own, str(path), images, settings=shared)["unmatched"] > 0
    mismatched = {
        **settings,
        "ensemble": {**settings["ensemble"], "member_postprocess": [postprocess_settings(own[0])]},
    }
    with pytest.raises(ValueError, match="1 member post-process settings for an ensemble of 2"):
        detections_from_outputs(boxes, scores, mismatched, levels, (WIDTH, HEIGHT))


def test_a_lower_asked_threshold_lowers_every_members_candidates() -> None:
    member = {"score_threshold": 0.4, "nms_iou": 0.3, "max_detections": 8, "topk": 80}
    settings = {**member, "score_threshold": 0.05, "ensemble": {"members": 2, "member_postprocess": [member, member]}}
    lowered = with_candidate_threshold(settings, 0.2)
    assert lowered["score_threshold"] == 0.05  # already lower: kept
    assert [m["score_threshold"] for m in lowered["ensemble"]["member_postprocess"]] == [0.2, 0.2]
    assert settings["ensemble"]["member_postprocess"][0]["score_threshold"] == 0.4  # the bundle's own: untouched
    assert with_candidate_threshold({**member, "ensemble": {"members": 2}}, 0.1)["score_threshold"] == 0.1


def _bundle(path: Path, where: Path, settings: dict[str, Any], levels: list[int], version: int) -> str:
    """A detection bundle of the graph at `path` with these post-process settings, as the export ships it."""
    from rooivalk.export.bundle import BundleInfo, io_specs, write_bundle
    from rooivalk.models.letterbox import LETTERBOX_FILL

    inputs, outputs = io_specs(path)
    preprocessing = {
        "kind": "detection",
        "input_height": HEIGHT,
        "input_width": WIDTH,
        "fill": LETTERBOX_FILL,
        "postprocess": {**settings, "level_sizes": levels},
        "operating_threshold": 0.25,
    }
    info = BundleInfo(
        format_version=version,  # type: ignore[arg-type]
        name="model",
        precision="fp32",
        labels=["a", "b", "c"],
        preprocessing=preprocessing,
        inputs=inputs,
        outputs=outputs,
        logits_output="scores",
    )
    write_bundle(str(where), info, path)
    return str(where)


def test_the_predictor_runs_each_members_post_process_and_lowers_every_candidate_threshold(
    ensemble: tuple[list[Detector], Path, dict[str, Any]], tmp_path: Path
) -> None:
    from pydantic import ValidationError

    from rooivalk.export import Predictor
    from rooivalk.export.bundle import BundleInfo, bundle_format

    members, path, info = ensemble
    own = [members[0], _strict(members[1], most=100)]  # no cap: a lower threshold adds member 1's boxes
    detector = DetectorSpec(ensemble={"members": 2, "weights": [1.0, 3.0], "iou_threshold": 0.5})
    settings, levels = bundle_postprocess(own, detector), info["level_sizes"]
    predictor = Predictor.load(
        _bundle(path, tmp_path / "bundle", settings, levels, bundle_format({"postprocess": settings}))
    )
    assert predictor.info.format_version == 2  # a format-1 reader would run every member alike: it refuses
    image = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    batch = image.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255)  # letterboxed: the input's size
    boxes, scores = ort.InferenceSession(str(path)).run(OUTPUT_NAMES, {INPUT_NAME: batch})

    def expected(used: dict[str, Any], keep: float) -> tuple[np.ndarray, np.ndarray]:
        (found,) = detections_from_outputs(boxes, scores, used, levels, (WIDTH, HEIGHT))
        return found.boxes[found.scores >= keep], found.scores[found.scores >= keep]

    (low,) = predictor.detect([image], score_threshold=0.1)
    want_boxes, want_scores = expected(with_candidate_threshold(settings, 0.1), 0.1)
    np.testing.assert_allclose(low["scores"], want_scores, rtol=1e-5)
    np.testing.assert_allclose(low["boxes"], want_boxes, atol=1e-3)
    # Lowering only the top-level threshold (member 1 still at 0.4) gives other boxes.
    assert not np.array_equal(expected({**settings, "score_threshold": 0.05}, 0.1)[1], want_scores)
    # A bundle exported before members had their own post-process: every member runs the top-level one.
    old = {**settings, "ensemble": {k: v for k, v in settings["ensemble"].items() if k != "member_postprocess"}}
    (alike,) = Predictor.load(_bundle(path, tmp_path / "old", old, levels, 1)).detect([image], score_threshold=0.1)
    np.testing.assert_allclose(alike["scores"], expected(with_candidate_threshold(old, 0.1), 0.1)[1], rtol=1e-5)
    with pytest.raises(ValidationError, match="format_version: 1, but its preprocessing needs format 2"):
        BundleInfo.model_validate({**predictor.info.model_dump(), "format_version": 1})
