"""Ingestion on tiny generated data: quarantine, failures, version ids, splits, IDX, image handling."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rooivalk.data import IngestError, IngestResult, ingest_data
from rooivalk.data.dataset import SPLIT_CODES, load_dataset, load_quarantine
from rooivalk.data.readers import FASHION_MNIST_CLASSES, read_idx
from rooivalk.plan import DataSpec, SplitSpec

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def _image(seed: int, size: tuple[int, int] = (16, 16), mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))


def make_folder(
    root: Path, classes: dict[str, int], mode: str = "RGB", sizes: list[tuple[int, int]] | None = None
) -> Path:
    """<root>/<class>/<i>.png|jpg with distinct random content; even files PNG, odd files JPEG."""
    seed = 0
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            seed += 1
            size = sizes[seed % len(sizes)] if sizes else (16, 16)
            suffix = "png" if i % 2 == 0 else "jpg"
            _image(seed * 7919 + len(name), size, mode).save(root / name / f"{i}.{suffix}")
    return root


def spec(source: Path | str, **overrides: object) -> DataSpec:
    return DataSpec.model_validate({"source": str(source), "format": "image_folder", **overrides})


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "raw", {"cat": 10, "dog": 10, "owl": 10})


def test_bad_files_are_quarantined_with_reasons(folder: Path, tmp_path: Path) -> None:
    (folder / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (folder / "dog" / "empty.png").write_bytes(b"")
    (folder / "owl" / "notes.txt").write_text("not an image")
    (folder / "emu").mkdir()
    (folder / ".DS_Store").write_bytes(b"junk")  # hidden: ignored silently
    (folder / "cat" / ".hidden.png").write_bytes(b"junk")

    result = ingest_data(spec(folder), str(tmp_path / "ds"))

    quarantine = {Path(q["origin"]).name: q["reason"] for q in load_quarantine(tmp_path / "ds")}
    assert set(quarantine) == {"broken.png", "empty.png", "notes.txt", "emu"}
    assert "cannot decode image" in quarantine["broken.png"]
    assert "0 bytes" in quarantine["empty.png"]
    assert "not an image file" in quarantine["notes.txt"]
    assert quarantine["emu"] == "empty class folder"
    assert result.info.classes == ["cat", "dog", "owl"]
    assert result.info.num_samples == 30
    assert result.metrics["num_quarantined"] == 4.0
    assert result.quarantined == load_quarantine(tmp_path / "ds")


def test_root_file_and_undecodable_non_image_are_quarantined(folder: Path, tmp_path: Path) -> None:
    _image(1).save(folder / "loose.png")
    (folder / "dog" / "fake.jpg").write_text("text pretending to be a JPEG")
    result = ingest_data(spec(folder), str(tmp_path / "ds"))
    reasons = {Path(q["origin"]).name: q["reason"] for q in result.quarantined}
    assert "outside any class folder" in reasons["loose.png"]
    assert "cannot decode image" in reasons["fake.jpg"]


def test_writes_the_whole_artifact(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    result = ingest_data(spec(folder), str(out))
    assert isinstance(result, IngestResult)
    for name in ["dataset.json", "images.npy", "labels.npy", "splits.npy", "samples.csv", "quarantine.json"]:
        assert (out / name).is_file(), name
    assert (out / "class_balance.png").read_bytes()[:4] == b"\x89PNG"
    dataset = load_dataset(out)
    assert dataset.images.shape == (30, 16, 16, 3)
    assert dataset.info == result.info
    rows = list(csv.DictReader((out / "samples.csv").open()))
    assert [r["index"] for r in rows] == [str(i) for i in range(30)]
    assert [r["sample_id"] for r in rows] == sorted(r["sample_id"] for r in rows)  # content-hash order
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert result.metrics == {
        "num_samples": 30.0,
        "num_classes": 3.0,
        "num_quarantined": 0.0,
        "train_size": float(result.info.split_sizes["train"]),
        "val_size": float(result.info.split_sizes["val"]),
        "test_size": float(result.info.split_sizes["test"]),
    }


def test_missing_source_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(IngestError, match=f"data source not found: {missing}"):
        ingest_data(spec(missing), str(tmp_path / "ds"))


def test_all_invalid_fails_and_keeps_quarantine(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (raw / "cat").mkdir(parents=True)
    (raw / "cat" / "a.png").write_bytes(b"")
    (raw / "cat" / "b.txt").write_text("x")
    out = tmp_path / "ds"
    with pytest.raises(IngestError, match=rf"no valid samples in {raw}: 2 quarantined, see quarantine.json"):
        ingest_data(spec(raw), str(out))
    assert len(load_quarantine(out)) == 2
    assert not (out / "dataset.json").exists()


def test_too_small_class_names_the_class(tmp_path: Path) -> None:
    raw = make_folder(tmp_path / "raw", {"big": 10, "tiny": 3})
    with pytest.raises(IngestError, match=r"class 'tiny' has 3 sample\(s\).*at least 7 per class"):
        ingest_data(spec(raw), str(tmp_path / "ds"))


def test_version_id_is_stable_and_content_addressed(folder: Path, tmp_path: Path) -> None:
    first = ingest_data(spec(folder), str(tmp_path / "a")).info
    # Same content under other file names (so another listing order) and re-ingested elsewhere.
    renamed = tmp_path / "renamed"
    for path in sorted(folder.rglob("*.*")):
        target = renamed / path.parent.name / f"z{999 - int(path.stem)}{path.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    second = ingest_data(spec(renamed), str(tmp_path / "b")).info
    assert second.version_id == first.version_id
    assert second.version_id.startswith("ds-")
    assert len(second.version_id) == 19
    np.testing.assert_array_equal(load_dataset(tmp_path / "a").splits, load_dataset(tmp_path / "b").splits)
    assert ingest_data(spec(folder), str(tmp_path / "a")).info.version_id == first.version_id

    reseeded = ingest_data(spec(folder, split={"seed": 1}), str(tmp_path / "c")).info
    assert reseeded.version_id != first.version_id
    _image(424242).save(folder / "cat" / "new.png")
    assert ingest_data(spec(folder), str(tmp_path / "d")).info.version_id != first.version_id


def test_split_is_stratified_with_the_requested_fractions(tmp_path: Path) -> None:
    raw = make_folder(tmp_path / "raw", {"a": 20, "b": 20, "c": 40})
    split = {"train": 0.6, "val": 0.2, "test": 0.2, "seed": 3}
    info = ingest_data(spec(raw, split=split), str(tmp_path / "ds")).info
    assert info.split_sizes == {"train": 48, "val": 16, "test": 16}
    for name, fraction in [("train", 0.6), ("val", 0.2), ("test", 0.2)]:
        for cls, total in [("a", 20), ("b", 20), ("c", 40)]:
            assert info.class_balance[name][cls] == pytest.approx(total * fraction, abs=1)
    dataset = load_dataset(tmp_path / "ds")
    assert dataset.subset("test")[0].shape[0] == 16


def test_mixed_sizes_are_resized_and_max_samples_caps(tmp_path: Path) -> None:
    raw = make_folder(tmp_path / "raw", {"a": 12, "b": 12}, sizes=[(16, 16), (20, 12), (9, 30)])
    data = spec(raw, image_size=24, max_samples_per_class=10)
    info = ingest_data(data, str(tmp_path / "ds")).info
    assert info.image_shape == (24, 24, 3)
    assert info.num_samples == 20
    assert load_dataset(tmp_path / "ds").images.shape == (20, 24, 24, 3)


def test_grayscale_auto_detection_and_forced_channels(tmp_path: Path) -> None:
    gray = make_folder(tmp_path / "gray", {"a": 10, "b": 10}, mode="L")
    assert ingest_data(spec(gray), str(tmp_path / "g")).info.image_shape == (16, 16, 1)
    assert ingest_data(spec(gray, channels=3), str(tmp_path / "g3")).info.image_shape == (16, 16, 3)
    mixed = make_folder(tmp_path / "mixed", {"a": 10, "b": 10}, mode="L")
    _image(77).save(mixed / "a" / "colour.png")
    assert ingest_data(spec(mixed), str(tmp_path / "m")).info.image_shape == (16, 16, 3)
    colour = ingest_data(spec(mixed, channels=1), str(tmp_path / "m1"))
    assert colour.info.image_shape == (16, 16, 1)


def _idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    header = struct.pack(">I", magic if magic is not None else 0x0800 | array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def make_idx(root: Path, train: int = 40, test: int = 20, classes: int = 4, compress: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for part, count in [("train", train), ("t10k", test)]:
        images = rng.integers(0, 256, (count, 8, 8), dtype=np.uint8)
        labels = np.arange(count, dtype=np.uint8) % classes
        for kind, array in [("images-idx3", images), ("labels-idx1", labels)]:
            data = _idx_bytes(array)
            name = f"{part}-{kind}-ubyte"
            if compress:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
    return root


def test_idx_uses_the_official_test_split(tmp_path: Path) -> None:
    raw = make_idx(tmp_path / "digits")
    data = DataSpec(source=str(raw), format="idx", split=SplitSpec(train=0.75, val=0.25, test=0.0))
    result = ingest_data(data, str(tmp_path / "ds"))
    assert result.info.classes == ["0", "1", "2", "3"]
    assert result.info.image_shape == (8, 8, 1)
    assert result.info.split_sizes == {"train": 30, "val": 10, "test": 20}
    rows = list(csv.DictReader((tmp_path / "ds" / "samples.csv").open()))
    assert all(("t10k-" in r["origin"]) == (r["split"] == "test") for r in rows)
    # make_idx labels sample i as i % 4, so each row's label follows from its origin "<file>#i".
    assert all(r["label"] == str(int(r["origin"].rsplit("#", 1)[1]) % 4) for r in rows)


def test_idx_without_source_test_splits_everything(tmp_path: Path) -> None:
    raw = make_idx(tmp_path / "digits", compress=False)
    data = DataSpec(source=str(raw), format="idx", split=SplitSpec(use_source_test=False, seed=1))
    info = ingest_data(data, str(tmp_path / "ds")).info
    assert info.num_samples == 60
    assert info.split_sizes["test"] == 9  # ceil(0.15 * 60), drawn from both files


def test_idx_sample_id_is_the_hash_of_the_image_bytes(tmp_path: Path) -> None:
    raw = make_idx(tmp_path / "fashion-like", classes=10, train=20, test=10)
    read = read_idx(str(raw))
    assert read.classes == FASHION_MNIST_CLASSES
    sample = read.samples[0]
    assert sample.image is not None
    assert sample.sample_id == hashlib.sha256(sample.image.tobytes()).hexdigest()
    assert [s.official_test for s in read.samples].count(True) == 10


def test_bad_idx_magic_names_the_file(tmp_path: Path) -> None:
    raw = make_idx(tmp_path / "digits", compress=False)
    bad = raw / "train-labels-idx1-ubyte"
    bad.write_bytes(_idx_bytes(np.zeros(40, dtype=np.uint8), magic=0x0803))
    with pytest.raises(IngestError, match=rf"{bad}: bad IDX magic number 0x00000803"):
        ingest_data(DataSpec(source=str(raw), format="idx"), str(tmp_path / "ds"))


def test_idx_size_mismatch_names_both_files(tmp_path: Path) -> None:
    raw = make_idx(tmp_path / "digits", compress=False)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(19, dtype=np.uint8)))
    with pytest.raises(IngestError, match=r"t10k-images-idx3-ubyte has 20 images but .*t10k-labels-idx1-ubyte has 19"):
        ingest_data(DataSpec(source=str(raw), format="idx"), str(tmp_path / "ds"))


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Fashion-MNIST not installed at /usr/share/datasets")
def test_real_fashion_mnist(tmp_path: Path) -> None:
    data = DataSpec(source=str(FASHION_DIR), format="idx", max_samples_per_class=30)
    result = ingest_data(data, str(tmp_path / "ds"))
    assert result.info.classes == FASHION_MNIST_CLASSES
    assert result.info.image_shape == (28, 28, 1)
    assert result.info.num_samples == 300
    rows = list(csv.DictReader((tmp_path / "ds" / "samples.csv").open()))
    assert all(("t10k-" in r["origin"]) == (r["split"] == "test") for r in rows)
    assert json.loads((tmp_path / "ds" / "quarantine.json").read_text()) == []
    assert SPLIT_CODES["test"] in set(load_dataset(tmp_path / "ds").splits.tolist())
