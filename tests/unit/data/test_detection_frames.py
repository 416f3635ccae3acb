"""The detection-frame simulator: YOLO folders the reader takes whole, exact boxes, splits, deterministic by seed."""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from rooivalk.data.detection_reader import read_yolo
from rooivalk.data.simulators.detection_frames import _place, simulate_detection_frames
from rooivalk.data.simulators.optical import SUPERSAMPLE, _draw_plane, _draw_quadcopter


def assert_boxes_valid(boxes: np.ndarray, size: tuple[int, int]) -> None:
    width, height = size
    assert (boxes[:, :2] >= 0).all()
    assert (boxes[:, 2] <= width).all()
    assert (boxes[:, 3] <= height).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()  # non-degenerate


def test_shapes_read_back_whole_and_each_box_is_the_extent_of_its_shape(tmp_path: Path) -> None:
    summary = simulate_detection_frames(tmp_path, "shapes", 40, 160, 96, seed=1, max_objects=1, negatives=0.0)
    result = read_yolo(str(tmp_path))
    assert len(result.samples) == 40
    assert result.classes == ["circle", "square", "triangle"]
    assert result.quarantined == []
    assert summary == {
        "kind": "shapes",
        "images": 40,
        "negatives": 0,
        "boxes": dict(Counter(label for sample in result.samples for label in sample.labels)),
        "splits": None,
    }
    for sample in result.samples:
        assert sample.size == (160, 96)
        assert sample.channels == 3
        assert len(sample.labels) == 1
        assert_boxes_valid(sample.boxes, sample.size)
        x1, y1, x2, y2 = np.rint(sample.boxes[0]).astype(int)
        pixels = np.asarray(Image.open(sample.image_uri))  # (H, W, 3)
        # The shape is one flat colour, the background noisy: the commonest colour in the box is the shape's.
        colours, counts = np.unique(pixels[y1:y2, x1:x2].reshape(-1, 3), axis=0, return_counts=True)
        rows, cols = np.nonzero((pixels == colours[counts.argmax()]).all(axis=2))
        assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x1, y1, x2, y2)


def test_counter_drone_frames_negatives_and_object_counts(tmp_path: Path) -> None:
    summary = simulate_detection_frames(tmp_path, "counter_drone", 40, 160, 96, seed=2, negatives=0.25)
    result = read_yolo(str(tmp_path))
    assert result.classes == ["drone", "bird", "aircraft"]
    assert result.quarantined == []
    assert len(result.samples) == 40
    counts = [len(sample.labels) for sample in result.samples]
    assert counts.count(0) == summary["negatives"] == 10
    assert max(counts) <= 3
    assert len(set(counts)) >= 3  # 0 and varied object counts
    assert summary["boxes"] == dict(Counter(label for sample in result.samples for label in sample.labels))
    assert len(list((tmp_path / "labels").glob("*.txt"))) == 40  # a negative has an empty label file
    widths = np.concatenate([sample.boxes[:, 2] - sample.boxes[:, 0] for sample in result.samples])
    assert widths.min() < 10
    assert widths.max() > 30
    for sample in result.samples:
        assert sample.size == (160, 96)
        assert_boxes_valid(sample.boxes, sample.size)


@pytest.mark.parametrize(
    "draw",
    [partial(_draw_quadcopter, angle=0.3, ink=255), partial(_draw_plane, angle=2.0, ink=255, swept=0.1)],
    ids=["quadcopter", "plane"],
)
@pytest.mark.parametrize("blur", [0, 4])
def test_a_sky_object_box_is_the_clipped_extent_of_its_drawn_pixels(draw: partial[None], blur: int) -> None:
    rng = np.random.default_rng(0)
    clipped = 0
    for span in np.geomspace(6, 40, 30):
        placed = _place(rng, draw, float(span), 64, 48, SUPERSAMPLE, blur)
        if placed is None:  # less than half of it inside the frame
            continue
        coverage, (x1, y1, x2, y2) = placed
        assert coverage.shape == (48, 64)
        rows, cols = np.nonzero(coverage)
        assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x1, y1, x2, y2)
        clipped += x1 == 0 or y1 == 0 or x2 == 64 or y2 == 48
    assert clipped > 0  # some were cut by the frame's edge


def test_same_seed_same_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    def files(seed: int, name: str) -> dict[str, bytes]:
        root = tmp_path / name
        simulate_detection_frames(root, "counter_drone", 12, 96, 64, seed=seed)
        return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}

    first, again, other = files(5, "a"), files(5, "b"), files(6, "c")
    assert len(first) == 12 * 2 + 1
    assert first == again
    assert first.keys() == other.keys()
    assert all(first[path] != other[path] for path in first if path.endswith(".png"))


def test_splits_write_train_val_test_folders_in_their_fractions(tmp_path: Path) -> None:
    summary = simulate_detection_frames(tmp_path, "shapes", 50, 160, 96, seed=3, splits=(0.6, 0.3, 0.1))
    assert summary["splits"] == {"train": 30, "val": 15, "test": 5}
    result = read_yolo(str(tmp_path))
    assert result.quarantined == []
    assert Counter(sample.split for sample in result.samples) == {"train": 30, "val": 15, "test": 5}
    assert len(list((tmp_path / "labels" / "val").glob("*.txt"))) == 15
    data = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert data == {
        "names": ["circle", "square", "triangle"],
        "nc": 3,
        "train": "images/train",
        "val": "images/val",
        "test": "images/test",
    }


def test_bad_settings_and_an_existing_output_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        simulate_detection_frames(tmp_path, "fish", 4, 64, 64, seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="summing to 1"):
        simulate_detection_frames(tmp_path, "shapes", 4, 64, 64, seed=0, splits=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="share in"):
        simulate_detection_frames(tmp_path, "shapes", 4, 64, 64, seed=0, negatives=1.5)
    with pytest.raises(ValueError, match="at least 32x32"):
        simulate_detection_frames(tmp_path, "shapes", 4, 64, 16, seed=0)
    simulate_detection_frames(tmp_path, "shapes", 2, 64, 64, seed=0)
    with pytest.raises(FileExistsError, match="fresh folder"):
        simulate_detection_frames(tmp_path, "shapes", 2, 64, 64, seed=0)
