"""The detection dataset: an index of images and their boxes, split, versioned by content, checked on load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from rooivalk import storage
from rooivalk.data.dataset import SPLIT_CODES
from rooivalk.data.detection_dataset import (
    NEGATIVE_STRATUM,
    ingest_detection,
    is_detection_dataset,
    load_detection_dataset,
    rarest_class_strata,
)
from rooivalk.data.detection_reader import read_yolo
from rooivalk.data.ingest import IngestError
from rooivalk.plan import SplitSpec

NAMES = ["fish", "crab", "eel"]


def yolo_folder(root: Path, labels: dict[str, tuple[int, str]], gray: tuple[str, ...] = ()) -> Path:
    """images/<path>.png (40x20, its pixels `shade`) and labels/<path>.txt for each path -> (shade, text)."""
    (root / "data.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text(yaml.safe_dump({"names": NAMES}))
    for path, (shade, text) in labels.items():
        image = root / "images" / f"{path}.png"
        label = root / "labels" / f"{path}.txt"
        image.parent.mkdir(parents=True, exist_ok=True)
        label.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 40, 3), shade, dtype=np.uint8)).convert("L" if path in gray else "RGB").save(image)
        label.write_text(text)
    return root


def box(class_id: int, shift: int = 0) -> str:
    return f"{class_id} {0.25 + shift * 0.01:.4f} 0.5 0.25 0.5\n"


def balanced(per_class: int = 20, prefix: str = "") -> dict[str, tuple[int, str]]:
    """`per_class` images of each class, one box each, every image its own content."""
    return {f"{prefix}{c}_{i}": (c * per_class + i, box(c, i)) for c in range(len(NAMES)) for i in range(per_class)}


def test_version_id_is_independent_of_file_order_and_follows_content(tmp_path: Path) -> None:
    labels = balanced(10)
    first = ingest_detection(
        read_yolo(str(yolo_folder(tmp_path / "a", labels))), str(tmp_path / "d1"), SplitSpec(), "a"
    )
    renamed = {f"img{n * 7 % 30:02d}": value for n, value in enumerate(labels.values())}  # permuted names
    second = ingest_detection(
        read_yolo(str(yolo_folder(tmp_path / "b", renamed))), str(tmp_path / "d2"), SplitSpec(), "b"
    )
    assert first.info.version_id == second.info.version_id
    one, two = load_detection_dataset(str(tmp_path / "d1")), load_detection_dataset(str(tmp_path / "d2"))
    assert one.sample_ids == two.sample_ids
    np.testing.assert_array_equal(one.splits, two.splits)
    moved = dict(labels, **{"0_0": (0, box(0, 5))})  # one box moved: another version
    third = ingest_detection(read_yolo(str(yolo_folder(tmp_path / "c", moved))), str(tmp_path / "d3"), SplitSpec(), "c")
    assert third.info.version_id != first.info.version_id
    relabelled = dict(labels, **{"0_0": (0, box(1))})  # the same box, another class: another version
    fourth = ingest_detection(
        read_yolo(str(yolo_folder(tmp_path / "e", relabelled))), str(tmp_path / "d4"), SplitSpec(), "e"
    )
    assert fourth.info.version_id not in {first.info.version_id, third.info.version_id}


def test_layout_splits_are_kept_and_val_is_drawn_from_train(tmp_path: Path) -> None:
    train = {f"train/{k}": v for k, v in balanced(10).items()}
    test = {f"test/t{c}": (200 + c, box(c)) for c in range(len(NAMES))}
    root = yolo_folder(tmp_path / "src", {**train, **test})
    result = ingest_detection(read_yolo(str(root)), str(tmp_path / "ds"), SplitSpec(), "src")
    assert result.info.split_from_source
    dataset = load_detection_dataset(str(tmp_path / "ds"))
    folder = {uri: Path(uri).parent.name for uri in dataset.image_uris}
    names = {code: name for name, code in SPLIT_CODES.items()}
    split_of = {uri: names[int(code)] for uri, code in zip(dataset.image_uris, dataset.splits, strict=True)}
    assert {uri for uri, s in split_of.items() if s == "test"} == {uri for uri, f in folder.items() if f == "test"}
    val = [uri for uri, s in split_of.items() if s == "val"]
    assert val
    assert all(folder[uri] == "train" for uri in val)
    assert result.metrics["test_size"] == 3.0
    assert result.metrics["val_size"] + result.metrics["train_size"] == 30.0


def test_drawn_split_is_stratified_on_each_image_s_classes(tmp_path: Path) -> None:
    root = yolo_folder(tmp_path / "src", balanced(20))
    result = ingest_detection(read_yolo(str(root)), str(tmp_path / "ds"), SplitSpec(), "src")
    assert not result.info.split_from_source
    assert result.info.split_sizes == {"train": 42, "val": 9, "test": 9}
    for split in ("val", "test"):  # 15% of 20 images of each class, exactly: stratified
        assert result.info.image_counts[split] == {name: 3 for name in NAMES}
    assert result.metrics == {
        "num_images": 60.0,
        "num_boxes": 60.0,
        "num_classes": 3.0,
        "num_negatives": 0.0,
        "num_quarantined": 0.0,
        "train_size": 42.0,
        "val_size": 9.0,
        "test_size": 9.0,
    }


def test_rarest_class_is_the_stratum_and_negatives_have_their_own() -> None:
    # image 0: fish + crab; image 1: crab; image 2: crab + eel; image 3: no box. fish: 1 image, eel: 1, crab: 3
    box_images = np.array([0, 0, 1, 2, 2, 2])
    box_labels = np.array([0, 1, 1, 1, 2, 2])
    strata, names = rarest_class_strata(box_images, box_labels, 4, NAMES)
    assert [names[s] for s in strata] == ["fish", "crab", "eel", NEGATIVE_STRATUM]


def test_boxes_round_trip_exactly(tmp_path: Path) -> None:
    labels = balanced(8)
    labels["0_0"] = (0, "0 0.123457 0.333333 0.1 0.2\n2 0.7 0.61 0.3 0.3\n1 0.5 0.5 1 1\n")
    labels["neg"] = (250, "")
    read = read_yolo(str(yolo_folder(tmp_path / "src", labels)))
    ingest_detection(read, str(tmp_path / "ds"), SplitSpec(stratified=False), "src")
    assert is_detection_dataset(str(tmp_path / "ds"))
    dataset = load_detection_dataset(str(tmp_path / "ds"))
    by_id = {sample.sample_id: sample for sample in read.samples}
    assert sorted(by_id) == dataset.sample_ids
    assert len(dataset.boxes) == 26
    for split in ("train", "val", "test"):
        part = dataset.subset(split)
        for index, sample_id in enumerate(part.sample_ids):
            boxes, classes = part.boxes_of(index)
            assert boxes.dtype == np.float32
            assert boxes.tobytes() == by_id[sample_id].boxes.tobytes()
            assert [NAMES[c] for c in classes] == by_id[sample_id].labels
            assert tuple(part.sizes[index]) == by_id[sample_id].size
    assert dataset.info.num_negatives == 1
    assert dataset.info.sources == {read.samples[0].source: 25}


@pytest.mark.parametrize("file", ["boxes.npy", "images.csv"])
def test_digests_are_checked_on_load(tmp_path: Path, file: str) -> None:
    root = yolo_folder(tmp_path / "src", balanced(10))
    ingest_detection(read_yolo(str(root)), str(tmp_path / "ds"), SplitSpec(), "src")
    load_detection_dataset(str(tmp_path / "ds"))  # intact: loads
    target = tmp_path / "ds" / file
    if file.endswith(".npy"):
        boxes = np.load(target)
        boxes[0, 0] += 1.0
        np.save(target, boxes)
    else:
        target.write_text(target.read_text().replace("train", "test", 1).replace("index", "index "))
    with pytest.raises(storage.IntegrityError):
        load_detection_dataset(str(tmp_path / "ds"))


def test_mixed_channels_are_a_one_line_error_naming_a_file(tmp_path: Path) -> None:
    root = yolo_folder(tmp_path / "src", balanced(10), gray=("1_3",))
    with pytest.raises(IngestError, match="mixed channels") as error:
        ingest_detection(read_yolo(str(root)), str(tmp_path / "ds"), SplitSpec(), "src")
    assert "\n" not in str(error.value)
    assert "1_3.png" in str(error.value)
    assert not is_detection_dataset(str(tmp_path / "ds"))


def test_no_box_at_all_is_an_error_and_the_quarantine_is_still_written(tmp_path: Path) -> None:
    labels = {f"n{i}": (i, "") for i in range(5)}
    labels["bad"] = (9, "0 0.5 0.5 0 0.2\n")  # zero width: quarantined, its image left out
    root = yolo_folder(tmp_path / "src", labels)
    quarantine = tmp_path / "report" / "quarantine.json"
    with pytest.raises(IngestError, match=r"^src: no box in 5 image\(s\)"):
        ingest_detection(read_yolo(str(root)), str(tmp_path / "ds"), SplitSpec(), "src", str(quarantine))
    for report in (tmp_path / "ds" / "quarantine.json", quarantine):
        assert {Path(entry["origin"]).name for entry in json.loads(report.read_text())} >= {"bad.txt"}
    assert not (tmp_path / "ds" / "dataset.json").exists()


def test_a_class_with_too_few_images_for_a_stratified_split_is_named(tmp_path: Path) -> None:
    labels = {k: v for k, v in balanced(10).items() if not k.startswith("2_") or k in ("2_0", "2_1")}
    root = yolo_folder(tmp_path / "src", labels)
    with pytest.raises(IngestError, match="src: class 'eel' has 2 sample"):
        ingest_detection(read_yolo(str(root)), str(tmp_path / "ds"), SplitSpec(), "src")
