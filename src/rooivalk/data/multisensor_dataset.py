"""The versioned multi-sensor dataset artifact: one row per event, one array per sensor, a presence mask.

Layout of a multi-sensor dataset directory (written through rooivalk.storage, dataset.json last):
    dataset.json     MultiSensorInfo: version id, classes, sensors with sample shape and dtype,
                     split sizes, class balance, per-sensor presence counts, quarantine count
    <sensor>.npy     (N, *sample_shape) per sensor; zeros where the sensor's sample is missing
    present.npy      bool (N, S): sensor s observed event i (S in the order of MultiSensorInfo.sensors)
    labels.npy       int64 (N,) class indices
    splits.npy       int8 (N,) split codes: 0 train, 1 val, 2 test
    events.csv       index, event_id, label, split, then one sample reference per sensor
    quarantine.json  rejected samples and events: [{"origin": ..., "reason": ...}]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

from rooivalk import storage
from rooivalk.data.dataset import INFO_FILE, SPLIT_CODES, Dataset, DatasetInfo, load_npy, npy_bytes, read_info
from rooivalk.data.ingest import class_balance

PRESENT_FILE = "present.npy"


class SensorInfo(BaseModel):
    name: str
    shape: tuple[int, ...]  # one sample's shape
    dtype: str  # numpy dtype name


class MultiSensorInfo(BaseModel):
    kind: str = "multisensor"
    version_id: str
    source: str
    classes: list[str]
    sensors: list[SensorInfo]
    num_events: int
    split_sizes: dict[str, int]
    class_balance: dict[str, dict[str, int]]
    present: dict[str, int]  # sensor -> events that have its sample
    split_seed: int
    quarantined: int
    files: dict[str, str] = {}  # array file -> sha256, checked on load

    def sensor(self, name: str) -> SensorInfo:
        for sensor in self.sensors:
            if sensor.name == name:
                return sensor
        raise KeyError(f"dataset {self.version_id} has no sensor {name!r}; it has {[s.name for s in self.sensors]}")


@dataclass
class MultiSensorDataset:
    info: MultiSensorInfo
    arrays: dict[str, np.ndarray]  # sensor -> (N, *shape)
    present: np.ndarray  # bool (N, S)
    labels: np.ndarray  # int64 (N,)
    splits: np.ndarray  # int8 (N,)

    @property
    def sensor_names(self) -> list[str]:
        return [sensor.name for sensor in self.info.sensors]

    @property
    def num_classes(self) -> int:
        return len(self.info.classes)

    def split_mask(self, split: str) -> np.ndarray:
        return np.asarray(self.splits == SPLIT_CODES[split])

    def present_of(self, sensor: str) -> np.ndarray:
        return np.asarray(self.present[:, self.sensor_names.index(sensor)])

    def image_view(self, sensor: str = "optical") -> Dataset:
        """The events that have this image sensor's sample, as the single-model image Dataset the
        image trainer reads (same splits; events without the sample are left out)."""
        keep = self.present_of(sensor)
        images = self.arrays[sensor][keep]
        if images.ndim == 3:  # (N, H, W) grayscale -> (N, H, W, 1)
            images = images[..., None]
        splits = self.splits[keep]
        labels = self.labels[keep]
        balance = class_balance(labels, splits, self.info.classes)
        info = DatasetInfo(
            version_id=f"{self.info.version_id}/{sensor}",
            source=self.info.source,
            format="multisensor",
            classes=self.info.classes,
            image_shape=tuple(int(v) for v in images.shape[1:4]),
            num_samples=int(keep.sum()),
            split_sizes={split: int((splits == code).sum()) for split, code in SPLIT_CODES.items()},
            class_balance=balance,
            split_seed=self.info.split_seed,
            quarantined=self.info.quarantined,
        )
        return Dataset(info=info, images=images, labels=labels, splits=splits)


def save_multisensor(dataset_dir: str, dataset: MultiSensorDataset) -> None:
    """Arrays first, dataset.json last: a directory without dataset.json is an incomplete ingestion."""
    arrays = {
        **{f"{name}.npy": array for name, array in dataset.arrays.items()},
        PRESENT_FILE: dataset.present.astype(bool),
        "labels.npy": dataset.labels.astype(np.int64),
        "splits.npy": dataset.splits.astype(np.int8),
    }
    dataset.info.files = {
        file: storage.write_bytes(f"{dataset_dir}/{file}", npy_bytes(a)) for file, a in arrays.items()
    }
    storage.write_text(f"{dataset_dir}/{INFO_FILE}", dataset.info.model_dump_json(indent=2))


def is_multisensor(dataset_dir: str) -> bool:
    uri = f"{dataset_dir}/{INFO_FILE}"
    return storage.exists(uri) and b'"kind": "multisensor"' in storage.read_bytes(uri)


def load_multisensor(dataset_dir: str) -> MultiSensorDataset:
    """Load a multi-sensor dataset artifact (local directory or s3:// prefix)."""
    info = MultiSensorInfo.model_validate_json(read_info(dataset_dir))
    return MultiSensorDataset(
        info=info,
        arrays={s.name: load_npy(f"{dataset_dir}/{s.name}.npy", info.files.get(f"{s.name}.npy")) for s in info.sensors},
        present=load_npy(f"{dataset_dir}/{PRESENT_FILE}", info.files.get(PRESENT_FILE)),
        labels=load_npy(f"{dataset_dir}/labels.npy", info.files.get("labels.npy")),
        splits=load_npy(f"{dataset_dir}/splits.npy", info.files.get("splits.npy")),
    )
