"""Sequence and table bundles end to end through the library (ingest_data -> train_model -> export_model
on the example plans at tiny scale), then `Predictor` on raw data: ragged raw sequences of any length
give what the bundle's model gives on the dataset's stored, standardized arrays; raw table rows give the
model's (or the ensemble's) probabilities, an unseen category is counted in `Predictor.unseen`; a wrong
feature count or a missing column is a BundleError naming the bundle."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from scipy.special import softmax

from rooivalk.data import ingest_data
from rooivalk.data.datasets import load_array_dataset
from rooivalk.data.sequence_dataset import SequenceDataset
from rooivalk.data.sequence_reader import pad_or_truncate
from rooivalk.data.simulators.sign_language import FEATURES as LANDMARK_FEATURES
from rooivalk.data.table_dataset import TableDataset, TableDatasetInfo, encode_rows, model_inputs
from rooivalk.export import Predictor, export_model
from rooivalk.export.array_export import onnx_feeds
from rooivalk.export.bundle import BundleError
from rooivalk.models.array_artifact import load_array_model
from rooivalk.models.array_inference import array_logits, model_arrays
from rooivalk.plan import Plan, load_plan
from rooivalk.training import train_model
from rooivalk.training.array_probabilities import predicted_probabilities

REPO = Path(__file__).resolve().parents[3]
PLANS = REPO / "pipelines" / "plans"
LENGTH = 6  # data.sequence.length of the tiny sign-language plan: the simulated signs have 5..8 frames
QUICK = [
    "training.threads=1",
    "evaluation.gates=[]",
    "evaluation.fail_on_gate=false",
    "export.latency_runs=100",
    "export.latency_warmup=1",
    "export.precisions=[fp32]",
    "export.fail_on_gate=false",
]


@dataclass
class Trained:
    plan: Plan
    source: Path
    dataset_dir: str
    model_dir: str
    bundle: str
    report: dict[str, object]


def train_and_export(plan_file: str, folder: Path, overrides: list[str]) -> Trained:
    plan = load_plan(PLANS / plan_file, [*QUICK, *overrides])
    dataset_dir, model_dir = str(folder / "dataset"), str(folder / "model")
    ingest_data(plan.data, dataset_dir)
    train_model(plan, dataset_dir, model_dir)
    result = export_model(plan, model_dir, dataset_dir, str(folder / "export"))
    report = json.loads((folder / "export" / "export_report.json").read_text())
    return Trained(plan, Path(plan.data.source), dataset_dir, model_dir, result.bundles["model"], report)


@pytest.fixture(scope="module")
def signs(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    folder = tmp_path_factory.mktemp("signs")
    overrides = [
        f"data.source={folder / 'signs.parquet'}",
        "data.simulate.count=60",
        "data.simulate.num_classes=3",
        "data.simulate.min_length=5",
        "data.simulate.max_length=8",
        f"data.sequence.length={LENGTH}",
        "model.architecture=gru-8x1",
        "training.stages.0.epochs=2",
        "training.stages.1.epochs=1",
    ]
    return train_and_export("sign_language.yaml", folder, overrides)


def table_overrides(folder: Path) -> list[str]:
    return [
        f"data.source={folder / 'events.parquet'}",
        "data.simulate.count=120",
        "model.architecture=16-8",
        "training.epochs=2",
        "ensemble.xgboost.trees=5",
        "export.temperature_scaling=false",  # Predictor's probabilities are then the ensemble's own
    ]


@pytest.fixture(scope="module")
def attribution(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    folder = tmp_path_factory.mktemp("attribution")
    return train_and_export("attribution.yaml", folder, table_overrides(folder))


@pytest.fixture(scope="module")
def table_mlp(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The attribution plan without its ensemble: the mlp alone ships."""
    folder = tmp_path_factory.mktemp("table-mlp")
    return train_and_export("attribution.yaml", folder, [*table_overrides(folder), "ensemble=null"])


def stored_index(dataset_dir: str, id_column: str) -> pd.DataFrame:
    """The dataset's index table (index, id, label, split, origin) in stored order."""
    name = "sequences.csv" if id_column == "sequence_id" else "rows.csv"
    return pd.read_csv(Path(dataset_dir) / name, dtype={id_column: str}).sort_values("index")


def raw_sequences(trained: Trained, features: list[str], split: str) -> list[np.ndarray]:
    """The source's raw frames (unpadded, in step order) of the split's sequences, in stored order."""
    frame = pd.read_parquet(trained.source).sort_values(["sequence_id", "step"])
    groups = {key: group[features].to_numpy(np.float32) for key, group in frame.groupby("sequence_id")}
    index = stored_index(trained.dataset_dir, "sequence_id")
    return [groups[key] for key in index.loc[index["split"] == split, "sequence_id"]]


def raw_rows(trained: Trained, split: str) -> pd.DataFrame:
    """The source's raw rows (every column: id, label, raw features) of the split, in stored order."""
    frame = pd.read_parquet(trained.source).set_index("id")
    index = stored_index(trained.dataset_dir, "id")
    return frame.loc[index.loc[index["split"] == split, "id"]].reset_index()


def test_the_sequence_bundle_records_the_datasets_encoding(signs: Trained) -> None:
    predictor = Predictor.load(signs.bundle)
    dataset = load_array_dataset(signs.dataset_dir)
    assert isinstance(dataset, SequenceDataset)
    config = predictor.info.preprocessing
    assert predictor.kind == "sequence"
    assert (config["features"], config["length"]) == (LANDMARK_FEATURES, LENGTH)
    assert config["mean"] == dataset.info.standardization.mean
    assert config["std"] == dataset.info.standardization.std
    assert predictor.info.labels == ["A", "B", "C"]
    assert [spec.name for spec in predictor.info.inputs] == ["sequences", "lengths"]
    assert predictor.info.precision == "fp32"


def test_raw_ragged_sequences_give_the_bundle_model_on_the_stored_arrays(signs: Trained) -> None:
    predictor = Predictor.load(signs.bundle)
    raw = raw_sequences(signs, predictor.info.preprocessing["features"], "test")
    lengths = {len(sequence) for sequence in raw}
    assert min(lengths) < LENGTH < max(lengths)  # padded and truncated ones alike
    probabilities = predictor.predict_proba(raw)

    # The shipped model.onnx on the dataset's stored (padded, truncated) arrays, standardized as in training.
    _, info = load_array_model(signs.model_dir)
    dataset = load_array_dataset(signs.dataset_dir)
    arrays, labels = model_arrays(info, dataset, "test")
    assert len(raw) == len(labels) > 0
    session = ort.InferenceSession(str(Path(signs.bundle) / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], onnx_feeds(info, arrays))[0]
    want = softmax(logits.astype(np.float64) / predictor.info.temperature, axis=1)
    assert probabilities.shape == (len(raw), 3)
    np.testing.assert_allclose(probabilities, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(predictor.logits(raw), logits, atol=1e-4, rtol=0)
    # And the export's measured accuracy is what the raw sequences give.
    predicted = np.asarray([predictor.info.labels.index(label) for label in predictor.predict(raw)])
    metrics = signs.report["metrics"]
    assert isinstance(metrics, dict)
    assert float((predicted == labels).mean()) == pytest.approx(metrics["system_test_accuracy"])


def test_the_sequence_bundle_matches_pytorch_on_every_split(signs: Trained) -> None:
    predictor = Predictor.load(signs.bundle)
    model, info = load_array_model(signs.model_dir)
    dataset = load_array_dataset(signs.dataset_dir)
    for split in ("train", "val", "test"):
        raw = raw_sequences(signs, info.input_names, split)
        arrays, _ = model_arrays(info, dataset, split)
        want = array_logits(model, arrays, info.num_classes)
        np.testing.assert_allclose(predictor.logits(raw), want, atol=1e-4, rtol=0)


def test_an_array_of_sequences_and_a_list_give_the_same(signs: Trained) -> None:
    predictor = Predictor.load(signs.bundle)
    raw = raw_sequences(signs, predictor.info.preprocessing["features"], "val")
    same_length = np.stack([np.concatenate([s, np.repeat(s[-1:], LENGTH, axis=0)])[:LENGTH] for s in raw])
    np.testing.assert_allclose(predictor.logits(same_length), predictor.logits(list(same_length)), atol=1e-6)


def test_frames_past_the_trained_length_are_cut_as_at_ingestion(signs: Trained) -> None:
    predictor = Predictor.load(signs.bundle)
    raw = [s for s in raw_sequences(signs, predictor.info.preprocessing["features"], "train") if len(s) >= LENGTH]
    assert len(raw) > 5
    rng = np.random.default_rng(0)
    longer = [np.concatenate([s, rng.normal(size=(9, s.shape[1])).astype(np.float32)]) for s in raw]
    np.testing.assert_allclose(predictor.logits(longer), predictor.logits([s[:LENGTH] for s in raw]), atol=1e-6)
    # Had the frames not been cut, the noise would have changed the logits: the model itself takes any length.
    config = predictor.info.preprocessing
    padded, lengths = pad_or_truncate(longer, max(len(s) for s in longer))
    standardized = (padded - np.asarray(config["mean"], np.float32)) / np.asarray(config["std"], np.float32)
    uncut = predictor.session.run(["logits"], {"sequences": standardized.astype(np.float32), "lengths": lengths})[0]
    assert np.abs(uncut - predictor.logits(longer)).max() > 1e-3


def test_a_wrong_feature_count_or_an_empty_sequence_names_the_bundle(signs: Trained) -> None:
    predictor = Predictor.load(signs.bundle)
    good = np.zeros((5, 63), np.float32)
    with pytest.raises(BundleError, match=r"sequence 1 has shape \(5, 62\); this model takes \(T >= 1, 63\)") as error:
        predictor.predict_proba([good, good[:, :62]])
    assert str(error.value).startswith(f"{signs.bundle}: ")
    with pytest.raises(BundleError, match=rf"^{signs.bundle}: sequence 0 has shape \(0, 63\)"):
        predictor.predict([good[:0]])


def test_no_sequences_is_a_bundle_error(signs: Trained) -> None:
    with pytest.raises(BundleError, match=rf"^{signs.bundle}: no samples given"):
        Predictor.load(signs.bundle).logits([])


def test_raw_rows_give_the_ensembles_probabilities(attribution: Trained) -> None:
    predictor = Predictor.load(attribution.bundle)
    assert predictor.kind == "table"
    assert predictor.info.precision == "fp32"
    assert predictor.info.temperature == 1.0
    model, info = load_array_model(attribution.model_dir)
    assert info.ensemble is not None
    dataset = load_array_dataset(attribution.dataset_dir)
    assert isinstance(dataset, TableDataset)
    for split in ("val", "test"):
        rows = raw_rows(attribution, split)
        arrays, labels = model_arrays(info, dataset, split)
        assert len(rows) == len(labels) > 0
        want = predicted_probabilities(model, info, attribution.model_dir, arrays, 256)
        np.testing.assert_allclose(predictor.predict_proba(rows), want, atol=1e-4, rtol=0)
        assert predictor.predict(rows) == [info.classes[k] for k in want.argmax(1)]
    # Neither member alone: the shipped graph is the weighted ensemble.
    rows = raw_rows(attribution, "test")
    arrays, _ = model_arrays(info, dataset, "test")
    mlp_alone = softmax(array_logits(model, arrays, info.num_classes), axis=1)
    assert np.abs(predictor.predict_proba(rows) - mlp_alone).max() > 1e-3


def test_raw_rows_give_the_mlps_probabilities_without_an_ensemble(table_mlp: Trained) -> None:
    predictor = Predictor.load(table_mlp.bundle)
    model, info = load_array_model(table_mlp.model_dir)
    assert info.ensemble is None
    dataset = load_array_dataset(table_mlp.dataset_dir)
    rows = raw_rows(table_mlp, "test")
    arrays, _ = model_arrays(info, dataset, "test")
    np.testing.assert_allclose(predictor.logits(rows), array_logits(model, arrays, info.num_classes), atol=1e-4)
    # A list of {column: value} is read like the DataFrame.
    np.testing.assert_allclose(predictor.logits(rows.to_dict("records")), predictor.logits(rows), atol=0)


def test_an_unseen_category_is_predicted_and_counted(attribution: Trained) -> None:
    predictor = Predictor.load(attribution.bundle)
    rows = raw_rows(attribution, "test").head(10)
    plain = predictor.predict_proba(rows)
    assert predictor.unseen == {"rf_protocol": 0, "rf_band": 0}
    rows.loc[rows.index[0], "rf_band"] = "60GHz"  # a band the training split never had
    rows.loc[rows.index[1], "rf_protocol"] = "smoke_signals"
    rows.loc[rows.index[2], "rf_protocol"] = "carrier_pigeon"
    changed = predictor.predict_proba(rows)
    assert predictor.unseen == {"rf_protocol": 2, "rf_band": 1}
    assert changed.shape == (10, 4)
    np.testing.assert_allclose(changed.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(changed[3:], plain[3:], atol=1e-6)  # other rows untouched
    # An unseen value is the dataset's unseen slot: what the model gives for that encoding.
    model, info = load_array_model(attribution.model_dir)
    table = TableDatasetInfo.model_validate(info.table)
    numeric, codes, _ = encode_rows(table, rows)
    band = [feature.name for feature in table.categorical_features].index("rf_band")
    assert codes[0, band] == table.categorical_features[band].unseen_code
    want = predicted_probabilities(
        model, info, attribution.model_dir, {"inputs": model_inputs(table, numeric, codes)}, 256
    )
    np.testing.assert_allclose(changed, want, atol=1e-4)
    predictor.predict(rows.head(3).assign(rf_band="915MHz", rf_protocol="elrs"))
    assert predictor.unseen == {"rf_protocol": 0, "rf_band": 0}  # counted per call


def test_a_missing_column_or_a_bad_cell_names_the_bundle(attribution: Trained) -> None:
    predictor = Predictor.load(attribution.bundle)
    rows = raw_rows(attribution, "test").head(5)
    with pytest.raises(BundleError, match=r"feature column\(s\) \['rf_band'\] missing") as error:
        predictor.predict_proba(rows.drop(columns="rf_band"))
    assert str(error.value).startswith(f"{attribution.bundle}: ")
    with pytest.raises(BundleError, match=rf"^{attribution.bundle}: row 2, column 'speed_mps': non-numeric value"):
        predictor.predict(rows.astype({"speed_mps": object}).assign(speed_mps=[1.0, 2.0, "fast", 3.0, 4.0]))
