"""The detector through the one engine: simulated YOLO frames -> detection dataset -> staged training on
mAP -> model.json and weights that reload to the same detections (rooivalk.training.detection_training)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rooivalk.data import ingest_data
from rooivalk.data.detection_dataset import load_detection_dataset
from rooivalk.models import create_model, layer_groups
from rooivalk.models.detector_artifact import is_detector_model, load_detector
from rooivalk.models.detector_inference import ImageCache, detect_images
from rooivalk.plan import validate_plan
from rooivalk.training.tasks.detection import image_strata, pack_targets, unpack_targets
from rooivalk.training.trainer import train_model


def tiny_plan(tmp_path: Path, **training: Any) -> dict[str, Any]:
    return {
        "name": "tiny-detector",
        "data": {
            "source": str(tmp_path / "frames"),
            "format": "yolo",
            "simulate": {"kind": "shapes", "count": 48, "seed": 1, "frame_width": 96, "frame_height": 64},
            "split": {"train": 0.6, "val": 0.2, "test": 0.2},
        },
        "model": {
            "family": "detector",
            "architecture": "fcos_tf_efficientnet_lite0",
            "detector": {"input_height": 64, "input_width": 96, "fpn_channels": 64},
        },
        "training": {
            "epochs": 2,
            "lr": 0.002,
            "batch_size": 8,
            "eval_batch_size": 16,
            "threads": 1,
            "detection_augment": {"mosaic": 0.5, "multi_scale": [0.75, 1.25]},
            **training,
        },
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    tmp_path = tmp_path_factory.mktemp("detector")
    plan = validate_plan(tiny_plan(tmp_path), origin="plan.yaml")
    ingest_data(plan.data, str(tmp_path / "dataset"))
    events: list[dict[str, Any]] = []
    result = train_model(plan, str(tmp_path / "dataset"), str(tmp_path / "model"), progress=events.append)
    return tmp_path, result, events


def test_the_detector_trains_through_the_engine_on_map(trained: tuple[Path, Any, Any]) -> None:
    tmp_path, result, events = trained
    epochs = [e for e in events if e["event"] == "epoch_end"]
    assert len(epochs) == 2
    for epoch in epochs:  # a detector's validation: mAP and its operating point, no accuracy or val loss
        assert {"val_map50", "val_map", "val_precision", "val_recall", "val_f1", "train_loss"} <= set(epoch)
        assert "val_accuracy" not in epoch
        assert "val_loss" not in epoch
        assert 0.0 <= epoch["val_map50"] <= 1.0
        assert np.isfinite(epoch["train_loss"])
    assert result.metrics["best_val_map50"] == max(e["val_map50"] for e in epochs)
    stages = json.loads((tmp_path / "model" / "stages.json").read_text())
    assert "best_val_map50" in stages[0]
    assert "best_val_accuracy" not in stages[0]
    assert is_detector_model(str(tmp_path / "model"))


def test_the_saved_detector_reloads_to_the_same_detections(trained: tuple[Path, Any, Any]) -> None:
    tmp_path, _, _ = trained
    model, info = load_detector(str(tmp_path / "model"))
    assert info.classes == ["circle", "square", "triangle"]
    assert (info.input_height, info.input_width) == (64, 96)
    dataset = load_detection_dataset(str(tmp_path / "dataset")).subset("test")
    cache = ImageCache()
    first = detect_images(model, lambda i: cache.get(dataset.image_uris[i]), len(dataset), (64, 96), 4)
    again, _ = load_detector(str(tmp_path / "model"))
    second = detect_images(again, lambda i: cache.get(dataset.image_uris[i]), len(dataset), (64, 96), 8)
    assert len(first) == len(dataset)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_array_equal(a.labels, b.labels)
        width, height = 96, 64  # the frames' own size: boxes come back in image pixels
        assert (a.boxes[:, [0, 2]] >= -1e-3).all()
        assert (a.boxes[:, [0, 2]] <= width + 1e-3).all()
        assert (a.boxes[:, [1, 3]] >= -1e-3).all()
        assert (a.boxes[:, [1, 3]] <= height + 1e-3).all()


def test_layer_groups_run_from_the_stem_to_the_head(tmp_path: Path) -> None:
    plan = validate_plan(tiny_plan(tmp_path), origin="plan.yaml")
    names = [g.name for g in layer_groups(create_model(plan.single_model, 3))]
    assert names[0] == "stem"
    assert names[-2:] == ["neck", "head"]
    assert names[1:-2] == [f"blocks.{i}" for i in range(7)]


def test_targets_pack_and_unpack_with_padding() -> None:
    samples = [
        (torch.zeros(3, 8, 8, dtype=torch.uint8), torch.tensor([[1.0, 2, 3, 4], [2, 2, 6, 6]]), torch.tensor([2, 0])),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)),
    ]
    packed = pack_targets(samples)
    assert packed.shape == (2, 2, 5)
    assert (packed[1, :, 0] == -1).all()
    targets = unpack_targets(packed)
    torch.testing.assert_close(targets[0]["boxes"], samples[0][1])
    assert targets[0]["labels"].tolist() == [2, 0]
    assert targets[1]["boxes"].shape == (0, 4)


def test_an_images_stratum_is_its_rarest_class(tmp_path: Path) -> None:
    plan = validate_plan(tiny_plan(tmp_path), origin="plan.yaml")
    ingest_data(plan.data, str(tmp_path / "dataset"))
    dataset = load_detection_dataset(str(tmp_path / "dataset")).subset("train")
    strata = image_strata(dataset)
    images_holding = {c: len(set(dataset.box_images[dataset.box_labels == c].tolist())) for c in range(3)}
    for row in range(len(dataset)):
        _, labels = dataset.boxes_of(row)
        if len(labels) == 0:
            assert strata[row] == 3  # negatives: a stratum of their own
        else:
            assert strata[row] == min(set(labels.tolist()), key=lambda c: (images_holding[c], c))


def test_evaluation_scores_map_operating_points_and_tta_and_gates_name_them(trained: tuple[Path, Any, Any]) -> None:
    from rooivalk.evaluation.evaluate import evaluate_model
    from rooivalk.evaluation.gates import GateFailure

    tmp_path, _, _ = trained
    raw = tiny_plan(tmp_path)
    raw["evaluation"] = {
        "gates": [{"metric": "test_ap50_circle", "min": 1.01}],  # impossible: the step must fail after writing
        "tta": {"hflip": True, "rotations": [0, 180], "scales": [1.0]},
    }
    plan = validate_plan(raw, origin="plan.yaml")
    with pytest.raises(GateFailure, match="test_ap50_circle"):
        evaluate_model(plan, str(tmp_path / "model"), str(tmp_path / "dataset"), str(tmp_path / "eval"))
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["kind"] == "detection"
    assert report["passed"] is False
    assert set(report["operating_points"]) == {"recall", "balanced", "precision"}
    points = report["operating_points"]  # a higher threshold keeps fewer detections
    assert points["recall"]["detections_per_image"] >= points["precision"]["detections_per_image"]
    assert report["tta"]["settings"]["rotations"] == [0, 180]
    assert 0.0 <= report["tta"]["map50"] <= 1.0
    raw["evaluation"]["gates"] = []
    result = evaluate_model(
        validate_plan(raw, origin="plan.yaml"), str(tmp_path / "model"), str(tmp_path / "dataset"), str(tmp_path / "e2")
    )
    for key in ("test_map50", "test_map", "test_f1", "test_ap50_circle", "test_tta_map50", "test_balanced_recall"):
        assert key in result.metrics, sorted(result.metrics)
    # 4 views (flip x 2 rotations) cost more than one
    assert result.metrics["test_tta_latency_ms_per_image"] > result.metrics["test_latency_ms_per_image"]
    assert (tmp_path / "e2" / "operating_points.png").stat().st_size > 0


def test_a_stage_sets_its_own_augmentation_strength(tmp_path: Path) -> None:
    from rooivalk.training.detection_training import detection_task

    raw = tiny_plan(tmp_path)
    raw["training"]["detection_augment"] = {"hflip": 0.5, "brightness": 0.4, "mosaic": 0.0}
    plan = validate_plan(raw, origin="plan.yaml")
    ingest_data(plan.data, str(tmp_path / "dataset"))
    task = detection_task(plan, plan.single_model, load_detection_dataset(str(tmp_path / "dataset")))
    light = task.stage_augment(0.25)
    assert light.settings.hflip == pytest.approx(0.125)  # from the plan's amounts, not the already-scaled ones
    assert light.settings.brightness == pytest.approx(0.1)
    assert task.stage_augment(0.25) is light
    assert task.stage_augment(0.0).settings.hflip == 0.0


def test_oversampled_classes_repeat_their_images_in_every_epoch(tmp_path: Path) -> None:
    from rooivalk.training.detection_training import detection_task

    raw = tiny_plan(tmp_path)
    raw["training"]["oversample"] = {"triangle": 3}
    plan = validate_plan(raw, origin="plan.yaml")
    ingest_data(plan.data, str(tmp_path / "dataset"))
    dataset = load_detection_dataset(str(tmp_path / "dataset"))
    task = detection_task(plan, plan.single_model, dataset)
    train = dataset.subset("train")
    holding = set(train.box_images[train.box_labels == 2].tolist())
    counts = np.bincount(task.train_rows, minlength=len(train))
    assert all(counts[row] == (3 if row in holding else 1) for row in range(len(train)))
    assert len(task.train_labels) == len(task.train_rows)
    raw["training"]["oversample"] = {"hexagon": 2}
    with pytest.raises(ValueError, match=r"training.oversample: \['hexagon'\] not among"):
        detection_task(validate_plan(raw, origin="plan.yaml"), plan.single_model, dataset)


def test_the_auto_schedule_trains_the_new_pyramid_with_the_head(tmp_path: Path) -> None:
    from rooivalk.training.engine.stages import model_stages

    plan = validate_plan(tiny_plan(tmp_path), origin="plan.yaml")
    groups = layer_groups(create_model(plan.single_model, 3))
    head, full = model_stages(plan.training.model_copy(update={"stages": None}), True, groups, cache_head=False)
    assert list(head.group_lrs) == ["neck", "head"]  # the FPN has no pretrained weights: not left random and frozen
    assert not head.cache_features
    assert list(full.group_lrs) == [g.name for g in groups]


def test_lr_find_sweeps_a_detectors_stage(trained: tuple[Path, Any, Any]) -> None:
    from rooivalk.training.lr_find import find_lr

    tmp_path, _, _ = trained
    plan = validate_plan(tiny_plan(tmp_path), origin="plan.yaml")
    result = find_lr(plan, str(tmp_path / "dataset"), steps=10)
    assert len(result.lrs) >= 2
    assert result.lrs[1] > result.lrs[0]
    assert all(np.isfinite(result.losses[:2]))


class _Killed(RuntimeError):
    pass


def test_a_killed_detector_run_resumes_bit_identical(trained: tuple[Path, Any, Any]) -> None:
    # Mosaic, mixup, flips and multi-scale sizes all draw from the RNG the engine reseeds each step: a
    # resumed run must replay the same batches and end with the same weights.
    from rooivalk.training.detection_training import detection_task, resolved_detector_spec
    from rooivalk.training.engine.fitting import fit_model

    tmp_path, _, _ = trained
    raw = tiny_plan(tmp_path)
    raw["training"] |= {"deterministic": True, "checkpoint": {"every_steps": 1, "keep_last": 2}}
    raw["training"]["detection_augment"] = {"mosaic": 0.5, "mixup": 0.3, "multi_scale": [0.75, 1.25]}
    plan = validate_plan(raw, origin="plan.yaml")
    dataset = load_detection_dataset(str(tmp_path / "dataset"))
    spec = resolved_detector_spec(plan.single_model, dataset)

    def fit(folder: str, progress: Any = None) -> Any:
        torch.manual_seed(0)
        model = create_model(spec, 3)
        task = detection_task(plan, spec, dataset)
        fit_model(model, task, plan.training, False, checkpoint_uri=str(tmp_path / folder), progress=progress)
        return model

    whole = fit("whole")
    seen = {"batches": 0}

    def kill_mid_run(event: dict[str, Any]) -> None:
        if event["event"] == "batch":
            seen["batches"] += 1
            if seen["batches"] == 4:  # mid-epoch 2 (3 steps an epoch)
                raise _Killed

    with pytest.raises(_Killed):
        fit("cut", kill_mid_run)
    resumed = fit("cut")
    other = resumed.state_dict()
    assert [k for k, v in whole.state_dict().items() if not torch.equal(v, other[k])] == []


def test_an_ensemble_trains_its_members_scores_each_and_ships_one_calibrated_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """model.detector.ensemble, its members differing in seed, augmentation strength and post-process,
    through training (and a rerun), evaluation and export, with per-class temperatures."""
    from rooivalk.evaluation.evaluate import evaluate_model
    from rooivalk.export import Predictor
    from rooivalk.export.pipeline_step import export_model
    from rooivalk.models.detection_calibration import calibrate_scores
    from rooivalk.models.detection_metrics import GroundTruth, detection_metrics
    from rooivalk.models.detector_artifact import load_detector_members, read_detector_info
    from rooivalk.steps.registration import detector_ensemble_tags
    from rooivalk.training import detection_training
    from rooivalk.training.detector_ensemble import member_plan
    from rooivalk.training.members import finished_member

    strengths: list[float] = []  # each member's augmentation, as its training builds it (members 1.., then 0)
    build = detection_training.detection_augment
    monkeypatch.setattr(
        detection_training, "detection_augment", lambda spec: strengths.append(spec.strength) or build(spec)
    )
    raw = tiny_plan(tmp_path, epochs=3, seed=5, checkpoint={"uri": str(tmp_path / "checkpoints")})
    own = {"model.detector.score_threshold": 0.1, "model.detector.nms_iou": 0.5}  # member 1's post-process
    overrides = [{"model.detector.max_detections": 40}, {"training.detection_augment.strength": 0.5, **own}]
    raw["model"]["detector"]["ensemble"] = {"members": 2, "weights": [2.0, 1.0], "overrides": overrides}
    raw["model"]["detector"]["score_threshold"] = 0.02  # low scores too: calibration needs misses
    raw["export"] = {"precisions": ["fp32"], "temperature_scaling": True, "latency_runs": 100, "latency_warmup": 1}
    plan = validate_plan(raw, origin="plan.yaml")
    dataset, model_dir = str(tmp_path / "dataset"), str(tmp_path / "model")
    member_dir = tmp_path / "model" / "members" / "1"
    ingest_data(plan.data, dataset)
    result = train_model(plan, dataset, model_dir)
    assert strengths == [0.5, 1.0]
    assert (tmp_path / "checkpoints" / "member_1").is_dir()  # member 0 checkpoints in the plan's folder
    assert {"best_val_map50", "member_1_best_val_map50"} <= set(result.metrics)
    assert "members/1/model.pt" in result.artifacts
    assert "model.json" in result.artifacts
    members, info = load_detector_members(model_dir)
    assert len(members) == 2
    assert info.detector.ensemble is not None
    assert info.detector.ensemble.overrides == overrides  # the root's model.json records every member's
    member_info = json.loads((member_dir / "model.json").read_text())
    assert member_info["spec"]["detector"]["ensemble"] is None  # loaded alone, a member is one detector
    # Each member runs its own post-process; the fused boxes keep the plan's max_detections.
    assert (member_info["spec"]["detector"]["score_threshold"], member_info["spec"]["detector"]["nms_iou"]) == (
        0.1,
        0.5,
    )
    post = [(m.fcos.score_thresh, m.fcos.nms_thresh, m.fcos.detections_per_img) for m in members]  # type: ignore[union-attr]
    assert post == [(0.02, 0.6, 40), (0.1, 0.5, 100)]
    assert info.detector.max_detections == 100
    weights = [member.state_dict().values() for member in members]
    assert any(not torch.equal(a, b) for a, b in zip(*weights, strict=True))  # seeds 5 and 6
    tag = json.loads(detector_ensemble_tags(model_dir)["rooivalk.detector_ensemble"])
    assert (tag["members"], tag["overrides"]) == (2, overrides)

    # A rerun (a retried pod) keeps the member already trained for this plan and resumes member 0.
    member_weights = (member_dir / "model.pt").read_bytes()
    events: list[dict[str, Any]] = []
    again = train_model(plan, dataset, model_dir, progress=events.append)
    assert {event["member"] for event in events if "member" in event} == {0}
    assert (member_dir / "model.pt").read_bytes() == member_weights
    assert again.metrics["member_1_best_val_map50"] == result.metrics["member_1_best_val_map50"]
    members, info = load_detector_members(model_dir)
    # A member is kept for its own plan: new fusion weights keep it, a changed override of it trains it again.
    version = load_detection_dataset(dataset).info.version_id

    def kept(**ensemble: Any) -> bool:  # whether member 1 of the plan with these ensemble settings is kept
        changed = json.loads(json.dumps(raw))
        changed["model"]["detector"]["ensemble"] |= ensemble
        digest = member_plan(validate_plan(changed), 1).digest()
        return finished_member(str(member_dir), digest, version, read_detector_info) is not None

    assert kept()
    assert kept(weights=[1.0, 1.0], overrides=[{"training.detection_augment.strength": 0.9}, overrides[1]])
    assert not kept(overrides=[{}, {"training.detection_augment.strength": 0.25}])

    evaluated = evaluate_model(plan, model_dir, dataset, str(tmp_path / "eval"))
    report = evaluated.report
    assert [m["member"] for m in report["ensemble"]["members"]] == [0, 1]
    assert [m["overrides"] for m in report["ensemble"]["members"]] == overrides
    assert report["ensemble"]["weights"] == [2.0, 1.0]
    for member in (0, 1):
        assert 0 <= evaluated.metrics[f"test_member_{member}_map50"] <= 1
    # Member 0 alone is the plan's detector: its figure is what evaluating it alone gives.
    cache = ImageCache()
    test = load_detection_dataset(dataset).subset("test")
    alone = detect_images(members[0], lambda i: cache.get(test.image_uris[i]), len(test), (64, 96), 16)
    truths = [GroundTruth(*test.boxes_of(i)) for i in range(len(test))]
    assert evaluated.metrics["test_member_0_map50"] == pytest.approx(
        detection_metrics(alone, truths, info.classes, 0.25)["map50"]
    )

    exported = export_model(plan, model_dir, dataset, str(tmp_path / "export"))
    export_report = json.loads((tmp_path / "export" / "export_report.json").read_text())
    # The bundle's post-process fuses the members' boxes in image pixels, as the evaluate step does.
    assert exported.metrics["model_fp32_test_map50"] == pytest.approx(report["map50"], abs=2e-3)
    assert export_report["postprocess"]["ensemble"]["members"] == 2
    assert export_report["postprocess"]["ensemble"]["overrides"] == overrides
    member_postprocess = export_report["postprocess"]["ensemble"]["member_postprocess"]
    assert [(m["score_threshold"], m["nms_iou"], m["max_detections"]) for m in member_postprocess] == post
    assert export_report["calibration"]["fitted"] is True, export_report["calibration"]
    bundle = Path(exported.bundles["model"])
    assert (bundle / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "export" / "reliability.png").exists()  # drawn in scratch, shipped in the bundle
    assert {"model_ece_before", "model_ece_after", "model_calibrated_f1"} <= set(exported.metrics)
    predictor = Predictor.load(str(bundle))
    postprocess = predictor.info.preprocessing["postprocess"]
    temperatures, biases = postprocess["class_temperatures"], postprocess["class_biases"]
    assert len(temperatures) == len(biases) == len(info.classes)
    assert any(t != 1.0 for t in temperatures)
    image = cache.get(test.image_uris[0]).permute(1, 2, 0).numpy()
    (calibrated,) = predictor.detect([image], score_threshold=0.0)
    del postprocess["class_temperatures"], postprocess["class_biases"]
    (plain,) = predictor.detect([image], score_threshold=0.0)
    np.testing.assert_allclose(calibrated["boxes"], plain["boxes"])
    np.testing.assert_allclose(
        calibrated["scores"], calibrate_scores(plain["scores"], plain["labels"], temperatures, biases), rtol=1e-6
    )

    # A member whose override changed trains again from its first epoch, in a checkpoint folder of its own
    # plan (the engine would resume the old member's finished checkpoint), and runs its new post-process.
    changed = json.loads(json.dumps(raw))
    changed["model"]["detector"]["ensemble"]["overrides"][1]["model.detector.nms_iou"] = 0.45
    events = []
    train_model(validate_plan(changed), dataset, model_dir, progress=events.append)
    epochs = [e["epoch"] for e in events if e.get("member") == 1 and e.get("event") == "epoch_end"]
    assert epochs == [1, 2, 3]
    assert len(list((tmp_path / "checkpoints" / "member_1").iterdir())) == 2  # the old plan's folder kept
    members, _ = load_detector_members(model_dir)
    assert members[1].fcos.nms_thresh == 0.45  # type: ignore[union-attr]

    # A member left by another run (weights other than those the root recorded) is refused rather than fused.
    root = json.loads((tmp_path / "model" / "model.json").read_text())
    (tmp_path / "model" / "model.json").write_text(json.dumps({**root, "member_weights_sha256": ["0" * 64]}))
    with pytest.raises(ValueError, match="member 1's weights are not the ones"):
        load_detector_members(model_dir)
