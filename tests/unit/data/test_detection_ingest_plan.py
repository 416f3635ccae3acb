"""`data.format: yolo | coco` through the ingest step's dispatcher (rooivalk.data.ingest_data): simulated
frames written where the plan says and rewritten only when the simulation's settings change, a COCO
file read into the same kind of dataset, and bad input named in the quarantine or a one-line error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from rooivalk.data import IngestError, ingest_data
from rooivalk.data.detection_dataset import load_detection_dataset
from rooivalk.plan import validate_plan


def plan_data(source: Path, data_format: str = "yolo", **data: Any) -> Any:
    raw = {
        "name": "ingest-detection",
        "data": {"source": str(source), "format": data_format, **data},
        "model": {"family": "detector", "architecture": "fcos_tf_efficientnet_lite0"},
    }
    return validate_plan(raw, origin="plan.yaml").data


def test_simulated_frames_are_written_once_and_rewritten_when_the_settings_change(tmp_path: Path) -> None:
    source = tmp_path / "frames"
    simulate = {"kind": "drone_frames", "count": 70, "seed": 3, "frame_width": 96, "frame_height": 64}
    first = ingest_data(plan_data(source, simulate=simulate), str(tmp_path / "a"))
    assert first.info.classes == ["drone", "bird", "aircraft"]
    assert first.info.num_images == 70
    assert json.loads((source / "simulation.json").read_text())["kind"] == "drone_frames"
    again = ingest_data(plan_data(source, simulate=simulate), str(tmp_path / "b"))
    assert again.info.version_id == first.info.version_id  # the same simulation: the same dataset
    changed = ingest_data(plan_data(source, simulate={**simulate, "count": 80}), str(tmp_path / "c"))
    assert changed.info.num_images == 80
    assert changed.info.version_id != first.info.version_id
    assert (tmp_path / "c" / "class_balance.png").stat().st_size > 0


def test_a_users_folder_is_never_overwritten_by_a_simulator(tmp_path: Path) -> None:
    source = tmp_path / "mine"
    source.mkdir()
    (source / "data.yaml").write_text("names: [a]\n")
    with pytest.raises(IngestError, match=str(source)):  # kept as it is: it has no images, a one-line error
        ingest_data(plan_data(source, simulate={"kind": "shapes", "count": 40}), str(tmp_path / "d"))
    assert sorted(p.name for p in source.iterdir()) == ["data.yaml"]


def _coco(root: Path) -> Path:
    images, annotations = [], []
    for index in range(24):
        name = f"img{index}.png"
        Image.new("RGB", (80, 60), (30, 30, 30)).save(root / name)
        images.append({"id": index, "file_name": name, "width": 80, "height": 60})
        annotations.append(
            {"id": 100 + index, "image_id": index, "category_id": 1 + index % 2, "bbox": [10, 10, 20, 15]}
        )
    annotations[5]["bbox"] = [70, 50, 30, 30]  # past the image: quarantined with its annotation id
    document = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "fish"}, {"id": 2, "name": "crab"}],
    }
    path = root / "instances.json"
    path.write_text(json.dumps(document))
    return path


def test_a_coco_file_becomes_a_detection_dataset_with_bad_boxes_quarantined(tmp_path: Path) -> None:
    path = _coco(tmp_path)
    result = ingest_data(plan_data(path, "coco", split={"train": 0.5, "val": 0.25, "test": 0.25}), str(tmp_path / "ds"))
    assert result.info.classes == ["fish", "crab"]
    assert result.info.num_images == 23
    assert any("105" in json.dumps(item) for item in result.quarantined)
    dataset = load_detection_dataset(str(tmp_path / "ds"))
    assert len(dataset) == 23
    assert set(dataset.box_labels.tolist()) == {0, 1}


def test_extra_sources_merge_with_provenance_and_a_class_map(tmp_path: Path) -> None:
    from rooivalk.data.simulators.detection_frames import simulate_detection_frames

    simulate_detection_frames(tmp_path / "sky", "counter_drone", images=40, width=96, height=64, seed=1)
    simulate_detection_frames(tmp_path / "more", "counter_drone", images=30, width=96, height=64, seed=2)
    extra = [{"name": "archive", "source": str(tmp_path / "more"), "format": "yolo"}]
    data = plan_data(tmp_path / "sky", extra_sources=extra, class_map={"aircraft": None, "bird": "animal"})
    result = ingest_data(data, str(tmp_path / "merged"))
    assert result.info.classes == ["drone", "animal"]  # aircraft boxes dropped: background
    assert result.info.sources == {"sky": 40, "archive": 30}
    with pytest.raises(IngestError, match="hexacopter"):
        ingest_data(plan_data(tmp_path / "sky", class_map={"hexacopter": "drone"}), str(tmp_path / "bad"))


def test_merging_keys_are_refused_for_other_formats(tmp_path: Path) -> None:
    from rooivalk.plan import PlanError

    raw = {
        "name": "p",
        "data": {"source": "/d.csv", "format": "table", "class_map": {"a": "b"}},
        "model": {"family": "mlp", "architecture": "64"},
    }
    with pytest.raises(PlanError, match="data.class_map: renaming classes across sources applies to"):
        validate_plan(raw, origin="plan.yaml")
