"""Load an ingested dataset of any built-in format by what its dataset.json says it is."""

from __future__ import annotations

from rooivalk.data.dataset import Dataset, load_dataset
from rooivalk.data.detection_dataset import DetectionDataset, is_detection_dataset, load_detection_dataset
from rooivalk.data.sequence_dataset import SequenceDataset, is_sequence_dataset, load_sequence_dataset
from rooivalk.data.table_dataset import TableDataset, is_table_dataset, load_table_dataset

ArrayDataset = SequenceDataset | TableDataset


def is_array_dataset(dataset_dir: str) -> bool:
    """Whether the dataset at `dataset_dir` is a sequence or table dataset (not images)."""
    return is_sequence_dataset(dataset_dir) or is_table_dataset(dataset_dir)


def load_array_dataset(dataset_dir: str) -> ArrayDataset:
    """A sequence or table dataset; anything else raises ValueError naming the folder."""
    if is_sequence_dataset(dataset_dir):
        return load_sequence_dataset(dataset_dir)
    if is_table_dataset(dataset_dir):
        return load_table_dataset(dataset_dir)
    raise ValueError(f"{dataset_dir}: not a sequence or table dataset (its dataset.json has another format)")


def load_any_dataset(dataset_dir: str) -> Dataset | ArrayDataset | DetectionDataset:
    if is_detection_dataset(dataset_dir):
        return load_detection_dataset(dataset_dir)
    return load_array_dataset(dataset_dir) if is_array_dataset(dataset_dir) else load_dataset(dataset_dir)
