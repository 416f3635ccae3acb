"""The versioned table dataset artifact (`data.format: table`), its ingestion and its encoding.

Layout of a table dataset directory (written through rooivalk.storage, dataset.json last):
    dataset.json     TableDatasetInfo: version id, classes, numeric features, categorical features with
                     their train categories, split sizes, class balance, standardization, unseen counts
    features.npy     float32 (N, F_num) raw numeric features (model_inputs standardizes them)
    categories.npy   int64 (N, F_cat) category codes: indices into CategoricalFeature.categories
    labels.npy       int64 (N,) class indices into TableDatasetInfo.classes
    splits.npy       int8 (N,) split codes: 0 train, 1 val, 2 test
    rows.csv         index, id, label, split, origin
    quarantine.json  rejected files and rows: [{"origin", "reason", "sequence_id" (the row's id), "row", "column"}]

Categories and standardization come from the train split only, so that val and test measure what a
deployed model meets: a category absent from train gets the UNSEEN code, counted per column and split.
Rows are stored in content-hash order; the version id hashes content, labels, the source's splits and
the settings, never file or row order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydantic import BaseModel

import rooivalk.data.array_dataset as array_dataset
from rooivalk import storage
from rooivalk.data.dataset import SPLIT_CODES, read_info
from rooivalk.data.ingest import class_balance
from rooivalk.data.sequence_dataset import Standardization, standardization_stats
from rooivalk.data.table_reader import category_matrix, numeric_matrix, read_table_rows
from rooivalk.plan import SplitSpec

FORMAT = "table"
ROWS_FILE = "rows.csv"
UNSEEN = "<unseen>"
_ARRAY_FILES = {"features.npy": np.float32, "categories.npy": np.int64, "labels.npy": np.int64, "splits.npy": np.int8}


class CategoricalFeature(BaseModel):
    name: str
    categories: list[str]  # the train split's values, sorted, then UNSEEN: a value's code is its index

    @property
    def unseen_code(self) -> int:
        return len(self.categories) - 1


class TableDatasetInfo(BaseModel):
    format: str = FORMAT
    version_id: str
    source: str
    label_column: str
    classes: list[str]
    numeric_features: list[str]
    categorical_features: list[CategoricalFeature]
    num_rows: int
    split_sizes: dict[str, int]
    class_balance: dict[str, dict[str, int]]  # split -> class name -> count
    split_seed: int
    split_from_source: bool  # splits taken from the source's split column, not drawn by the seed
    standardization: Standardization  # of the numeric features over the train split
    unseen: dict[str, dict[str, int]]  # categorical feature -> val/test -> values absent from its train categories
    quarantined: int
    files: dict[str, str] = {}  # array file -> sha256, checked on load


@dataclass
class TableDataset:
    info: TableDatasetInfo
    features: np.ndarray  # float32 (N, F_num), raw
    categories: np.ndarray  # int64 (N, F_cat)
    labels: np.ndarray  # int64 (N,)
    splits: np.ndarray  # int8 (N,)

    @property
    def num_classes(self) -> int:
        return len(self.info.classes)

    def split_mask(self, split: str) -> np.ndarray:
        return np.asarray(self.splits == SPLIT_CODES[split])

    def subset(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features (n, F_num), categories (n, F_cat), labels (n,)) of one split, in stored order."""
        mask = self.split_mask(split)
        return self.features[mask], self.categories[mask], self.labels[mask]


@dataclass
class TableIngestResult:
    info: TableDatasetInfo
    quarantined: list[dict[str, str | int]]
    metrics: dict[str, float] = field(default_factory=dict)


def encode_categories(features: list[CategoricalFeature], cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """object (N, F_cat) category names -> (int64 (N, F_cat) codes, bool (N, F_cat) unseen mask)."""
    codes = np.empty(cells.shape, dtype=np.int64)
    for f, feature in enumerate(features):
        index = {name: code for code, name in enumerate(feature.categories[:-1])}
        codes[:, f] = [index.get(cell, feature.unseen_code) for cell in cells[:, f]]
    unseen = codes == np.array([feature.unseen_code for feature in features], dtype=np.int64)
    return codes, unseen.reshape(cells.shape)


def encode_rows(info: TableDatasetInfo, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """New rows as the dataset encodes them: (float32 (N, F_num) raw numeric features, int64 (N, F_cat)
    category codes, unseen values per categorical feature). Raw: model_inputs standardizes.

    A category the train split never had gets the UNSEEN code. Raises ValueError naming the row and
    column of a missing feature column or a bad numeric cell, which a model cannot be given.
    """
    names = [*info.numeric_features, *(feature.name for feature in info.categorical_features)]
    absent = [name for name in names if name not in frame.columns]
    if absent:
        raise ValueError(f"feature column(s) {absent} missing; dataset {info.version_id} has {names}")
    values, problems = numeric_matrix(frame, info.numeric_features)
    for row, problem in enumerate(problems):
        if problem is not None:
            raise ValueError(f"row {row}, column {problem[0]!r}: {problem[1]}")
    cells = category_matrix(frame, [feature.name for feature in info.categorical_features])
    codes, unseen = encode_categories(info.categorical_features, cells)
    counts = {feature.name: int(unseen[:, f].sum()) for f, feature in enumerate(info.categorical_features)}
    return values.astype(np.float32), codes, counts


def one_hot(info: TableDatasetInfo, codes: np.ndarray) -> np.ndarray:
    """int64 (N, F_cat) codes -> float32 (N, sum of len(categories)); the UNSEEN slot is a column too."""
    blocks = []
    for f, feature in enumerate(info.categorical_features):
        width = len(feature.categories)
        column = codes[:, f]
        if len(column) and (column.min() < 0 or column.max() >= width):
            raise ValueError(f"categorical feature {feature.name!r}: codes outside 0..{width - 1}")
        blocks.append(np.eye(width, dtype=np.float32)[column])
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(codes), 0), dtype=np.float32)


def model_inputs(info: TableDatasetInfo, numeric: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """float32 (N, F_num + one-hot width): standardized numeric features, then one-hot categories;
    the matrix an MLP or XGBoost takes, columns named by model_input_names."""
    return np.concatenate([info.standardization.apply(numeric), one_hot(info, codes)], axis=1)


def model_input_names(info: TableDatasetInfo) -> list[str]:
    """The model_inputs columns: numeric names, then `<feature>=<category>` per one-hot slot."""
    return [*info.numeric_features, *(f"{f.name}={c}" for f in info.categorical_features for c in f.categories)]


def row_content_ids(numeric: np.ndarray, categories: np.ndarray) -> list[str]:
    """sha256 of each row's float32 numeric values and category names: its identity, whatever its
    id, file or position."""
    values = np.ascontiguousarray(numeric, dtype=np.float32)  # (N, F_num): fixed width, so no separator
    return [storage.sha256_bytes(values[i].tobytes() + "\x1f".join(categories[i]).encode()) for i in range(len(values))]


def _metrics(info: TableDatasetInfo) -> dict[str, float]:
    unseen = {name: sum(per_split.values()) for name, per_split in info.unseen.items()}
    return {
        "num_rows": float(info.num_rows),
        "num_classes": float(len(info.classes)),
        "num_numeric_features": float(len(info.numeric_features)),
        "num_categorical_features": float(len(info.categorical_features)),
        "num_quarantined": float(info.quarantined),
        "num_unseen": float(sum(unseen.values())),
        **{f"{name}_size": float(size) for name, size in info.split_sizes.items()},
        **{f"unseen_{name}": float(count) for name, count in unseen.items()},
    }


def ingest_table(
    source: str,
    dataset_dir: str,
    split: SplitSpec | None = None,
    label_column: str = "label",
    feature_columns: list[str] | None = None,
    categorical_columns: list[str] | None = None,
    quarantine_uri: str | None = None,
) -> TableIngestResult:
    """Read, validate, split, encode and version `source` as a table dataset at `dataset_dir`.

    `split`: fractions, seed and stratification; a source with a split column keeps its splits unless
    `split.use_source_test` is false. Categories and standardization are learned from the train split.
    """
    split = split or SplitSpec()
    read = array_dataset.read_source(
        lambda: read_table_rows(source, label_column, feature_columns, categorical_columns), dataset_dir, quarantine_uri
    )
    numeric, cells = read.features, read.categories
    ids = row_content_ids(numeric, cells)
    source_splits = read.splits if read.splits is not None else [""] * len(ids)
    order = sorted(range(len(ids)), key=lambda i: (ids[i], read.labels[i], source_splits[i], read.ids[i]))
    numeric, cells = numeric[order], cells[order]
    classes = read.classes
    class_index = {name: index for index, name in enumerate(classes)}
    labels = np.array([class_index[read.labels[i]] for i in order], dtype=np.int64)
    codes, from_source = array_dataset.split_codes(read.splits, order, labels, classes, split, source, "rows")
    train = codes == SPLIT_CODES["train"]
    categorical = [  # each feature's sorted train-split values, then the unseen slot
        CategoricalFeature(name=name, categories=[*sorted(set(cells[train, f].tolist())), UNSEEN])
        for f, name in enumerate(read.categorical_names)
    ]
    category_codes, unseen = encode_categories(categorical, cells)
    keys = [(ids[i], read.labels[i], source_splits[i] if from_source else "") for i in order]
    settings = {"format": FORMAT, "numeric": read.numeric_names, "categorical": read.categorical_names}
    info = TableDatasetInfo(
        version_id=array_dataset.content_version_id(keys, settings, split),
        source=source,
        label_column=label_column,
        classes=classes,
        numeric_features=read.numeric_names,
        categorical_features=categorical,
        num_rows=len(order),
        split_sizes={name: int((codes == code).sum()) for name, code in SPLIT_CODES.items()},
        class_balance=class_balance(labels, codes, classes),
        split_seed=split.seed,
        split_from_source=from_source,
        standardization=standardization_stats(numeric[:, None, :], np.ones(len(order), dtype=np.int64), train),
        unseen={
            feature.name: {name: int(unseen[codes == SPLIT_CODES[name], f].sum()) for name in ("val", "test")}
            for f, feature in enumerate(categorical)
        },
        quarantined=len(read.quarantined),
    )
    table = array_dataset.index_csv("id", read.ids, read.labels, read.origins, order, codes)
    storage.write_text(f"{dataset_dir}/{ROWS_FILE}", table)
    save_table_dataset(dataset_dir, TableDataset(info, numeric, category_codes, labels, codes))
    return TableIngestResult(info, [entry.as_dict() for entry in read.quarantined], _metrics(info))


def save_table_dataset(dataset_dir: str, dataset: TableDataset) -> None:
    """Arrays first, dataset.json last: a directory without dataset.json is an incomplete ingestion."""
    arrays = (dataset.features, dataset.categories, dataset.labels, dataset.splits)
    array_dataset.save_arrays(dataset_dir, dataset.info, _ARRAY_FILES, arrays)


def is_table_dataset(dataset_dir: str) -> bool:
    return array_dataset.has_format(dataset_dir, FORMAT)


def load_table_dataset(dataset_dir: str) -> TableDataset:
    """Load a table dataset artifact (local directory or s3:// prefix); array digests are checked."""
    info = TableDatasetInfo.model_validate_json(read_info(dataset_dir))
    return TableDataset(info, *array_dataset.load_arrays(dataset_dir, _ARRAY_FILES, info.files))
