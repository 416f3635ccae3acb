"""The detection readers: YOLO folders and COCO JSON, boxes in pixels, splits, quarantine and merging."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from rooivalk import storage
from rooivalk.data.detection_reader import (
    DetectionFormatError,
    DetectionReadResult,
    DetectionSample,
    merge_sources,
    read_coco,
    read_yolo,
)
from rooivalk.data.source_tables import QuarantinedItem


def write_image(path: Path, size: tuple[int, int] = (40, 20), shade: int = 0, mode: str = "RGB") -> Path:
    """A (width, height) PNG whose bytes differ by `shade`, so that each has its own sample id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size[1], size[0], 3), shade, dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def yolo_folder(root: Path, names: Any = ("fish", "crab"), labels: dict[str, str] | None = None) -> Path:
    """images/<stem>.png (40x20) for every stem of `labels`, with labels/<stem>.txt holding its text."""
    names = list(names) if isinstance(names, tuple) else names
    write_text(root / "data.yaml", yaml.safe_dump({"names": names}, sort_keys=False))
    for shade, (stem, text) in enumerate((labels if labels is not None else {"a": "0 0.5 0.5 0.5 0.5\n"}).items()):
        write_image(root / "images" / f"{stem}.png", shade=shade)
        write_text(root / "labels" / f"{stem}.txt", text)
    return root


def by_name(result: DetectionReadResult) -> dict[str, DetectionSample]:
    return {Path(sample.image_uri).stem: sample for sample in result.samples}


def entries(result: DetectionReadResult) -> list[tuple[str, int | None, str | None, str]]:
    """(file name, row, item id, reason) of every quarantine entry."""
    return [(Path(q.origin).name, q.row, q.item_id, q.reason) for q in result.quarantined]


def test_yolo_boxes_become_absolute_xyxy(tmp_path: Path) -> None:
    root = yolo_folder(tmp_path, labels={"a": "0 0.5 0.5 0.5 0.5\n1 0.125 0.25 0.25 0.5\n\n"})
    result = read_yolo(str(root))
    (sample,) = result.samples
    assert sample.size == (40, 20)
    assert sample.boxes.dtype == np.float32
    # image 40 wide, 20 high: cx 0.5 w 0.5 -> x 10..30; cy 0.5 h 0.5 -> y 5..15
    np.testing.assert_allclose(sample.boxes, [[10, 5, 30, 15], [0, 0, 10, 10]])
    assert sample.labels == ["fish", "crab"]
    assert sample.split is None
    assert sample.source == str(root)
    assert sample.channels == 3
    assert sample.sample_id == storage.sha256_bytes((root / "images" / "a.png").read_bytes())
    assert result.classes == ["fish", "crab"]
    assert result.quarantined == []


def test_yolo_names_as_mapping_and_negatives(tmp_path: Path) -> None:
    root = yolo_folder(tmp_path, names={0: "fish", "2": "eel"}, labels={"a": "2 0.5 0.5 0.2 0.2\n", "empty": ""})
    write_image(root / "images" / "unlabelled.png", shade=99, mode="L")
    result = read_yolo(str(root))
    samples = by_name(result)
    assert result.classes == ["fish", "eel"]
    assert samples["a"].labels == ["eel"]
    for negative in ("empty", "unlabelled"):
        assert samples[negative].boxes.shape == (0, 4)
        assert samples[negative].labels == []
    assert samples["unlabelled"].channels == 1
    assert result.quarantined == []


def test_yolo_split_folders_are_the_splits(tmp_path: Path) -> None:
    root = yolo_folder(tmp_path, labels={})
    for shade, split in enumerate(("train", "val", "test")):
        write_image(root / "images" / split / f"{split}.png", shade=shade + 10)
        write_text(root / "labels" / split / f"{split}.txt", f"{shade % 2} 0.5 0.5 1 1\n")
    write_image(root / "images" / "stray.png", shade=50)
    result = read_yolo(str(root))
    assert {name: sample.split for name, sample in by_name(result).items()} == {
        "train": "train",
        "val": "val",
        "test": "test",
    }
    np.testing.assert_allclose(by_name(result)["val"].boxes, [[0, 0, 40, 20]])
    assert by_name(result)["val"].labels == ["crab"]
    ((name, _, _, reason),) = entries(result)
    assert name == "stray.png"
    assert reason.startswith("image outside the split folders")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("0 1.5 0.5 0.1 0.1", "coordinate out of [0, 1]"),
        ("0 0.95 0.5 0.2 0.2", "box extends past the image"),
        ("0 0.5 0.5 0 0.2", "zero or negative width/height"),
        ("0 0.5 0.5 0.2 -0.1", "zero or negative width/height"),
        ("1.5 0.5 0.5 0.2 0.2", "malformed line: class id '1.5' is not a non-negative integer"),
        ("0 0.5 0.5 0.2", "malformed line: 4 fields"),
        ("0 0.5 abc 0.2 0.2", "malformed line: non-numeric"),
        ("0 0.5 nan 0.2 0.2", "malformed line: non-finite"),
    ],
)
def test_yolo_bad_line_quarantines_its_image(tmp_path: Path, line: str, reason: str) -> None:
    root = yolo_folder(tmp_path, labels={"bad": f"0 0.5 0.5 0.2 0.2\n{line}\n", "good": "1 0.5 0.5 0.2 0.2\n"})
    result = read_yolo(str(root))
    assert list(by_name(result)) == ["good"]
    (file_name, row, _, first), (image_name, _, _, second) = entries(result)
    assert (file_name, row) == ("bad.txt", 2)  # the 1-based line of the bad box
    assert first.startswith(reason)
    assert (image_name, second) == ("bad.png", "image left out: 1 bad label(s) in labels/bad.txt")


def test_yolo_tolerance_clips_rounding_overshoot(tmp_path: Path) -> None:
    root = yolo_folder(tmp_path, labels={"a": "0 0.5 0.5 1.0000008 1\n"})
    (sample,) = read_yolo(str(root)).samples
    np.testing.assert_allclose(sample.boxes, [[0, 0, 40, 20]])


def test_yolo_orphan_label_unreadable_image_and_stray_files(tmp_path: Path) -> None:
    root = yolo_folder(tmp_path, labels={"good": "0 0.5 0.5 0.2 0.2\n"})
    write_text(root / "labels" / "orphan.txt", "0 0.5 0.5 0.2 0.2\n")
    write_text(root / "images" / "broken.png", "not a png")
    write_text(root / "images" / "notes.md", "hello")
    write_text(root / "labels" / "train.cache", "ultralytics")
    write_text(root / "images" / ".DS_Store", "")
    result = read_yolo(str(root))
    assert list(by_name(result)) == ["good"]
    found = {name: reason for name, _, _, reason in entries(result)}
    assert set(found) == {"orphan.txt", "broken.png", "notes.md"}
    assert found["orphan.txt"].startswith("label file without an image (expected images/orphan.jpeg")
    assert found["broken.png"].startswith("cannot decode image: UnidentifiedImageError")
    assert found["notes.md"] == "not an image file (extension '.md'; expected PNG or JPEG)"


@pytest.mark.parametrize(
    ("data_yaml", "message"),
    [
        (None, "data.yaml: not found"),
        ("names: 3\n", "'names' must be a list"),
        ("names: [a, b]\nnc: 3\n", "nc is 3 but 'names' has 2"),
        ("names: [a\n", "not valid YAML"),
    ],
)
def test_yolo_bad_data_yaml_is_one_error(tmp_path: Path, data_yaml: str | None, message: str) -> None:
    root = yolo_folder(tmp_path)
    (root / "data.yaml").unlink()
    if data_yaml is not None:
        write_text(root / "data.yaml", data_yaml)
    with pytest.raises(DetectionFormatError, match=message) as raised:
        read_yolo(str(root))
    assert str(root) in str(raised.value)


def test_yolo_without_usable_image_raises_with_quarantine(tmp_path: Path) -> None:
    root = yolo_folder(tmp_path, labels={"a": "0 0.5 0.5 0 0.2\n"})
    with pytest.raises(DetectionFormatError, match="no usable image") as raised:
        read_yolo(str(root))
    assert [q.reason for q in raised.value.quarantined][0].startswith("zero or negative width/height")


def test_a_yolo_class_id_beyond_the_names_is_a_one_line_error_naming_the_file_and_line(tmp_path: Path) -> None:
    root = yolo_folder(tmp_path, labels={"a": "0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n"})
    with pytest.raises(DetectionFormatError, match=r"a\.txt: line 2: class id 5 is beyond data.yaml's names") as raised:
        read_yolo(str(root))
    assert "\n" not in str(raised.value)


def coco_document(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 20},
            {"id": 2, "file_name": "b.png", "width": 40, "height": 20},
        ],
        "categories": [{"id": 3, "name": "crab"}, {"id": 1, "name": "fish"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [4, 2, 10, 6], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [30.5, 0, 9.5, 20]},
            {"id": 12, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 20], "iscrowd": 1},
        ],
    }
    document.update(overrides)
    return document


def coco_folder(root: Path, document: dict[str, Any], json_path: str = "instances.json") -> Path:
    for shade, image in enumerate(document["images"]):
        write_image(root / "images" / image["file_name"], shade=shade)
    write_text(root / json_path, json.dumps(document))
    return root / json_path


def test_coco_boxes_crowd_and_negatives(tmp_path: Path) -> None:
    uri = coco_folder(tmp_path, coco_document())
    result = read_coco(str(uri))
    samples = by_name(result)
    np.testing.assert_allclose(samples["a"].boxes, [[4.0, 2.0, 14.0, 8.0], [30.5, 0.0, 40.0, 20.0]])
    assert samples["a"].labels == ["fish", "crab"]  # the crowd box (annotation 12) is skipped
    assert samples["b"].boxes.shape == (0, 4)
    assert samples["a"].size == (40, 20)
    assert samples["a"].source == str(uri)
    assert samples["a"].split is None
    assert result.classes == ["fish", "crab"]  # category id order
    assert result.quarantined == []


@pytest.mark.parametrize(
    ("annotation", "reason"),
    [
        ({"category_id": 9, "bbox": [1, 1, 5, 5]}, "unknown category id 9"),
        ({"category_id": 1, "bbox": [1, 1, 0, 5]}, "zero or negative width/height"),
        ({"category_id": 1, "bbox": [1, 1, 5]}, "malformed bbox"),
        ({"category_id": 1, "bbox": [30, 1, 15, 5]}, "box extends past the 40x20 image"),
        ({"category_id": 1, "bbox": [1, -2, 5, 5]}, "box extends past the 40x20 image"),
    ],
)
def test_coco_bad_annotation_quarantines_its_image(tmp_path: Path, annotation: dict[str, Any], reason: str) -> None:
    document = coco_document()
    document["annotations"].append({"id": 77, "image_id": 2, **annotation})
    uri = coco_folder(tmp_path, document)
    result = read_coco(str(uri))
    assert list(by_name(result)) == ["a"]
    (json_name, _, item_id, first), (image_name, _, _, second) = entries(result)
    assert (json_name, item_id) == ("instances.json", "77")
    assert first.startswith(reason)
    assert image_name == "b.png"
    assert second == f"image left out: 1 bad label(s) in {uri}"


def test_coco_missing_unreadable_and_resized_images(tmp_path: Path) -> None:
    images = [
        {"id": 1, "file_name": "a.png", "width": 40, "height": 20},
        {"id": 5, "file_name": "gone.png", "width": 40, "height": 20},
        {"id": 6, "file_name": "broken.png", "width": 40, "height": 20},
        {"id": 7, "file_name": "small.png", "width": 40, "height": 20},
    ]
    uri = coco_folder(tmp_path, coco_document(images=images[:1]))
    write_text(tmp_path / "instances.json", json.dumps(coco_document(images=images)))
    write_text(tmp_path / "images" / "broken.png", "")
    write_image(tmp_path / "images" / "small.png", size=(20, 20), shade=9)
    result = read_coco(str(uri))
    assert list(by_name(result)) == ["a"]
    assert entries(result) == [
        ("instances.json", None, "image 5", "image file not found: 'gone.png' (beside the JSON file or in images/)"),
        ("broken.png", None, None, "empty file (0 bytes)"),
        ("small.png", None, None, "the JSON gives the image as 40x20, the file is 20x20"),
    ]


def test_coco_folder_with_split_files_under_annotations(tmp_path: Path) -> None:
    train = coco_document()
    val = coco_document(images=[{"id": 1, "file_name": "c.png", "width": 40, "height": 20}], annotations=[])
    coco_folder(tmp_path, train, "annotations/instances_train2017.json")
    coco_folder(tmp_path, val, "annotations/instances_val2017.json")
    result = read_coco(str(tmp_path))
    assert {name: sample.split for name, sample in by_name(result).items()} == {"a": "train", "b": "train", "c": "val"}


def test_coco_unknown_image_and_bad_file(tmp_path: Path) -> None:
    document = coco_document()
    document["annotations"].append({"id": 90, "image_id": 404, "category_id": 1, "bbox": [1, 1, 2, 2]})
    result = read_coco(str(coco_folder(tmp_path, document)))
    assert entries(result) == [("instances.json", None, "90", "annotation of unknown image id 404")]
    write_text(tmp_path / "instances.json", json.dumps({"images": []}))
    with pytest.raises(DetectionFormatError, match="instances.json: not COCO instances JSON"):
        read_coco(str(tmp_path / "instances.json"))
    write_text(tmp_path / "instances.json", json.dumps(coco_document(categories=[{"id": 1, "name": "a"}] * 2)))
    with pytest.raises(DetectionFormatError, match="category id 1 appears twice"):
        read_coco(str(tmp_path / "instances.json"))


def test_merge_renames_drops_and_deduplicates(tmp_path: Path) -> None:
    yolo = read_yolo(str(yolo_folder(tmp_path / "y", names=("Fish", "diver"), labels={"a": "0 0.5 0.5 0.5 0.5\n"})))
    coco_folder(tmp_path / "c", coco_document())  # its a.png has the same bytes as the YOLO a.png (shade 0)
    coco = read_coco(str(tmp_path / "c" / "instances.json"))
    coco.quarantined.append(QuarantinedItem("x.json", "earlier entry"))
    merged = merge_sources([("reef", yolo), ("lab", coco)], class_map={"Fish": "fish", "diver": None})
    assert merged.classes == ["fish", "crab"]
    assert [(Path(s.image_uri).parent.parent.name, s.source, s.labels) for s in merged.samples] == [
        ("y", "reef", ["fish"]),
        ("c", "lab", []),  # b.png: a negative
    ]
    np.testing.assert_allclose(merged.samples[0].boxes, [[10, 5, 30, 15]])
    assert [q.reason for q in merged.quarantined] == [
        "earlier entry",
        f"duplicate image: same content as {tmp_path / 'y' / 'images' / 'a.png'} (source 'reef'), kept once",
    ]
    assert merged.quarantined[1].item_id == yolo.samples[0].sample_id


def test_merge_dropped_class_makes_negatives_and_empty_is_an_error(tmp_path: Path) -> None:
    yolo = read_yolo(str(yolo_folder(tmp_path, labels={"a": "0 0.5 0.5 0.5 0.5\n1 0.5 0.5 0.2 0.2\n"})))
    kept = merge_sources([("only", yolo)], class_map={"fish": ""})
    assert kept.samples[0].labels == ["crab"]
    np.testing.assert_allclose(kept.samples[0].boxes, [[16, 8, 24, 12]])
    assert kept.classes == ["crab"]
    with pytest.raises(DetectionFormatError, match="no valid box in 1 image"):
        merge_sources([("only", yolo)], class_map={"fish": "", "crab": None})
    with pytest.raises(DetectionFormatError, match=r"class_map renames \['Crab'\], which no source declares"):
        merge_sources([("only", yolo)], class_map={"Crab": "crab"})
    with pytest.raises(ValueError, match="distinct non-empty names"):
        merge_sources([("same", yolo), ("same", yolo)])


def test_readers_read_s3(tmp_path: Path, s3_endpoint: str) -> None:
    yolo_folder(tmp_path / "y", labels={"a": "0 0.5 0.5 0.5 0.5\n", "b": ""})
    coco_folder(tmp_path / "c", coco_document(), "annotations/instances_val.json")
    storage.copy_folder(tmp_path, "s3://rooivalk/det")
    yolo = read_yolo("s3://rooivalk/det/y/")
    assert [(s.image_uri, s.labels) for s in yolo.samples] == [
        ("s3://rooivalk/det/y/images/a.png", ["fish"]),
        ("s3://rooivalk/det/y/images/b.png", []),
    ]
    coco = read_coco("s3://rooivalk/det/c")
    assert [(s.image_uri, s.split, len(s.labels)) for s in coco.samples] == [
        ("s3://rooivalk/det/c/images/a.png", "val", 2),
        ("s3://rooivalk/det/c/images/b.png", "val", 0),
    ]
    assert yolo.quarantined == coco.quarantined == []
