"""Deployment bundles on disk and on S3 (moto on loopback), Predictor and SystemPredictor over real
ONNX files exported from tiny torch models, and logging a bundle to MLflow (sqlite in tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from rooivalk import storage
from rooivalk.data.transforms import to_model_input
from rooivalk.export.benchmark import ort_session
from rooivalk.export.bundle import (
    ENGINE_FILE,
    ENGINE_META_FILE,
    INFO_FILE,
    MODEL_FILE,
    PREPROCESSING_KEYS,
    RELIABILITY_FILE,
    BundleError,
    BundleInfo,
    TensorSpec,
    bundle_metadata,
    io_specs,
    read_bundle_info,
    write_bundle,
)
from rooivalk.export.mlflow_onnx import log_bundle_to_mlflow
from rooivalk.export.onnx_export import OPSET, export_module
from rooivalk.export.predictor import PREPROCESSORS, STRUCTURED_KINDS, Predictor, SystemPredictor
from rooivalk.models.rf_cnn_transformer import iq_to_input

LABELS = ["bird", "drone", "plane"]
IMAGE_PREP = {"kind": "image", "input_size": 16, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "in_chans": 3}
DIM = 6  # sensor embedding width
IQ_LENGTH, TRACK_SHAPE = 32, (8, 4)


class _TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, len(LABELS))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))  # type: ignore[no-any-return]


class _Encoder(nn.Module):
    """A sensor encoder: samples (B, ...) -> (embedding (B, DIM), logits (B, K))."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(features, DIM), nn.Tanh())
        self.head = nn.Linear(DIM, len(LABELS))

    def forward(self, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.body(samples)
        return embedding, self.head(embedding)


class _Fusion(nn.Module):
    """Masked sum of per-sensor linear heads: (rf (B, DIM), radar (B, DIM), present bool (B, 2)) -> logits."""

    def __init__(self) -> None:
        super().__init__()
        self.rf, self.radar = nn.Linear(DIM, len(LABELS)), nn.Linear(DIM, len(LABELS))

    def forward(self, rf: torch.Tensor, radar: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        mask = present.float()
        return self.rf(rf) * mask[:, :1] + self.radar(radar) * mask[:, 1:]  # type: ignore[no-any-return]


def _export(
    module: nn.Module, example: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str], path: Path
) -> Path:
    """The library's dynamic-batch export (rooivalk.export.onnx_export.export_module)."""
    return export_module(module, example, inputs, outputs, path)


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("onnx")
    rf_example = torch.randn(2, 2, IQ_LENGTH)
    radar_example = torch.randn(2, *TRACK_SHAPE)
    fusion_example = (torch.randn(2, DIM), torch.randn(2, DIM), torch.ones(2, 2, dtype=torch.bool))
    return {
        "optical": _export(_TinyCNN(), (torch.randn(2, 3, 16, 16),), ["input"], ["logits"], root / "optical.onnx"),
        "rf": _export(_Encoder(2 * IQ_LENGTH), (rf_example,), ["samples"], ["embedding", "logits"], root / "rf.onnx"),
        "radar": _export(_Encoder(8 * 4), (radar_example,), ["samples"], ["embedding", "logits"], root / "radar.onnx"),
        "fusion": _export(_Fusion(), fusion_example, ["rf", "radar", "present"], ["logits"], root / "fusion.onnx"),
    }


def _info(
    name: str, onnx_path: Path, preprocessing: dict[str, Any], temperature: float = 1.7, **extra: Any
) -> BundleInfo:
    inputs, outputs = io_specs(onnx_path)
    return BundleInfo(
        name=name,
        precision="fp32",
        labels=LABELS,
        preprocessing=preprocessing,
        temperature=temperature,
        inputs=inputs,
        outputs=outputs,
        metrics={"accuracy": 0.9},
        metadata=bundle_metadata("plan-digest", "dataset-v1"),
        **extra,
    )


def _images(count: int = 5) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (count, 20, 20), dtype=np.uint8)  # grayscale, resized to 16


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    exp = np.exp(logits / temperature - (logits / temperature).max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _write_optical(uri: str, onnx_files: dict[str, Path], extra_files: dict[str, Path] | None = None) -> dict[str, str]:
    return write_bundle(uri, _info("optical", onnx_files["optical"], IMAGE_PREP), onnx_files["optical"], extra_files)


def _check_optical(predictor: Predictor, onnx_path: Path) -> None:
    images = _images()
    expected_input = to_model_input(images[..., None], 16, IMAGE_PREP["mean"], IMAGE_PREP["std"], 3).numpy()
    np.testing.assert_array_equal(predictor.preprocess(images), expected_input)
    logits = ort_session(onnx_path).run(None, {"input": expected_input})[0]
    np.testing.assert_allclose(predictor.logits(images), logits, rtol=1e-6)
    proba = predictor.predict_proba(images)
    assert proba.dtype == np.float32
    assert proba.shape == (5, 3)
    np.testing.assert_allclose(proba, _softmax(logits, 1.7), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert predictor.predict(images) == [LABELS[i] for i in logits.argmax(axis=1)]


def test_every_preprocessing_kind_has_one_function() -> None:
    # "embeddings" takes a dict of arrays and is fed as such; every other kind maps to one preprocessor.
    assert {*PREPROCESSORS, *STRUCTURED_KINDS} == set(PREPROCESSING_KEYS)


def test_local_bundle_round_trip_and_predictions(
    onnx_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extras = {name: tmp_path / name for name in (RELIABILITY_FILE, ENGINE_FILE, ENGINE_META_FILE)}
    for index, path in enumerate(extras.values()):
        path.write_bytes(f"extra {index}".encode())
    order: list[str] = []
    write_bytes = storage.write_bytes
    monkeypatch.setattr(
        storage, "write_bytes", lambda uri, data: order.append(Path(str(uri)).name) or write_bytes(uri, data)
    )
    uri = str(tmp_path / "bundle")
    written = _write_optical(uri, onnx_files, extras)
    assert order[-1] == INFO_FILE  # the completion marker goes last
    assert sorted(order) == sorted(written)
    info = read_bundle_info(uri)
    assert set(info.files) == {MODEL_FILE, *extras}
    assert all(info.files[name] == storage.sha256_file(written[name]) for name in info.files)
    assert info.model_dump(exclude={"files"}) == _info("optical", onnx_files["optical"], IMAGE_PREP).model_dump(
        exclude={"files", "metadata"}
    ) | {"metadata": info.metadata}
    assert info.metadata["opset"] == OPSET
    assert set(info.metadata["versions"]) == {"torch", "onnx", "onnxruntime"}
    predictor = Predictor.load(uri)
    _check_optical(predictor, onnx_files["optical"])
    with pytest.raises(BundleError, match=r"bundle.*embedding_output: bundle 'optical' has none"):
        predictor.embed(_images())


def test_s3_bundle_loads_and_a_tampered_model_is_refused(onnx_files: dict[str, Path], s3_endpoint: str) -> None:
    import boto3

    uri = "s3://rooivalk/bundles/optical"
    written = _write_optical(uri, onnx_files)
    assert written[INFO_FILE] == f"{uri}/{INFO_FILE}"
    _check_optical(Predictor.load(uri), onnx_files["optical"])
    # Someone swaps the model after bundle.json was written (no metadata: only the manifest can tell).
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(
        Bucket="rooivalk", Key="bundles/optical/model.onnx", Body=onnx_files["fusion"].read_bytes()
    )
    with pytest.raises(storage.IntegrityError, match=r"s3://rooivalk/bundles/optical/model.onnx: sha256 .*manifest"):
        Predictor.load(uri)


def test_tampered_local_model_is_refused_naming_the_file(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    uri = str(tmp_path / "bundle")
    written = _write_optical(uri, onnx_files)
    Path(written[MODEL_FILE]).write_bytes(Path(written[MODEL_FILE]).read_bytes() + b"\0")
    with pytest.raises(storage.IntegrityError, match=r"bundle/model.onnx: sha256 .*manifest.*refused"):
        Predictor.load(uri)


def test_missing_or_invalid_bundle_json_is_refused_naming_the_uri(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"empty/bundle.json: no readable bundle.json"):
        Predictor.load(str(tmp_path / "empty"))
    uri = str(tmp_path / "bundle")
    written = _write_optical(uri, onnx_files)
    data = json.loads(Path(written[INFO_FILE]).read_text())
    Path(written[INFO_FILE]).write_text(json.dumps({**data, "temperature": 0}))
    with pytest.raises(BundleError, match=r"bundle/bundle.json: invalid bundle info: temperature: .*greater than 0"):
        read_bundle_info(uri)
    Path(written[INFO_FILE]).write_text(json.dumps({**data, "files": {}}))
    with pytest.raises(BundleError, match=r"files: no sha256 recorded for model.onnx"):
        read_bundle_info(uri)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"preprocessing": {"kind": "jpeg"}}, r"preprocessing\n.*kind 'jpeg' is not one of"),
        ({"preprocessing": {"kind": "image", "input_size": 16}}, r"kind 'image' needs \['mean', 'std', 'in_chans'\]"),
        ({"labels": ["bird", "drone"]}, "labels: 2 names for 3 logits"),
        ({"logits_output": "scores"}, r"logits_output: 'scores' is not an output"),
        ({"embedding_output": "embedding"}, r"embedding_output: 'embedding' is not an output"),
        ({"precision": "int4"}, "precision"),
        ({"files": {MODEL_FILE: "abc"}}, r"not a sha256 hex digest for \['model.onnx'\]"),
        ({"serving": "triton"}, "Extra inputs are not permitted"),
    ],
)
def test_bundle_info_rejects_bad_fields(onnx_files: dict[str, Path], change: dict[str, Any], message: str) -> None:
    good = _info("optical", onnx_files["optical"], IMAGE_PREP).model_dump()
    BundleInfo.model_validate(good)
    with pytest.raises(ValueError, match=message):
        BundleInfo.model_validate({**good, **change})


def test_write_bundle_refuses_mismatched_io_and_an_engine_without_sidecar(
    onnx_files: dict[str, Path], tmp_path: Path
) -> None:
    info = _info("optical", onnx_files["optical"], IMAGE_PREP)
    with pytest.raises(BundleError, match=r"inputs/outputs of bundle info 'optical' do not match .*rf.onnx"):
        write_bundle(str(tmp_path / "b"), info, onnx_files["rf"])
    # The ONNX graph's spelling of the same inputs/outputs ("float", 0 for an unknown dim) is accepted too.
    graph_style = info.model_copy(
        update={
            "inputs": [TensorSpec(name="input", shape=["batch", 3, 16, 16], type="float")],
            "outputs": [TensorSpec(name="logits", shape=["batch", 0], type="float")],
        }
    )
    assert set(write_bundle(str(tmp_path / "graph"), graph_style, onnx_files["optical"])) == {MODEL_FILE, INFO_FILE}
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"engine")
    with pytest.raises(BundleError, match=r"model.engine needs its model.engine.json sidecar"):
        write_bundle(str(tmp_path / "b"), info, onnx_files["optical"], {ENGINE_FILE: engine})
    assert not (tmp_path / "b").exists()  # nothing written before the checks pass


def _write_system(root: Path, onnx_files: dict[str, Path]) -> None:
    sensors = {"rf": {"kind": "iq", "scale": "median-noise-floor"}, "radar": {"kind": "float32"}}
    for sensor, prep in sensors.items():
        info = _info(sensor, onnx_files[sensor], prep, temperature=1.0, embedding_output="embedding")
        write_bundle(str(root / sensor), info, onnx_files[sensor])
    fusion_prep = {"kind": "embeddings", "sensors": ["rf", "radar"], "dims": {"rf": DIM, "radar": DIM}}
    write_bundle(str(root / "fusion"), _info("fusion", onnx_files["fusion"], fusion_prep), onnx_files["fusion"])


def test_system_predictor_masks_a_missing_sensor(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    _write_system(tmp_path, onnx_files)
    system = SystemPredictor.load(str(tmp_path))
    rng = np.random.default_rng(2)
    iq = (rng.normal(size=(5, IQ_LENGTH)) + 1j * rng.normal(size=(5, IQ_LENGTH))).astype(np.complex64)
    tracks = rng.normal(size=(5, *TRACK_SHAPE)).astype(np.float32)
    rf_embedding = ort_session(onnx_files["rf"]).run(["embedding"], {"samples": iq_to_input(iq)})[0]
    np.testing.assert_allclose(system.encoders["rf"].embed(iq), rf_embedding, rtol=1e-6)
    feeds = {"rf": rf_embedding, "radar": np.zeros((5, DIM), np.float32), "present": np.array([[True, False]] * 5)}
    logits = ort_session(onnx_files["fusion"]).run(None, feeds)[0]
    proba = system.predict_proba({"rf": iq, "radar": None})
    np.testing.assert_allclose(proba, _softmax(logits, 1.7), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(system.predict_proba({"rf": iq}), proba)  # a missing key is an absent sensor
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    both = system.predict_proba({"rf": iq, "radar": tracks})
    assert not np.allclose(both, proba)  # the radar counts once it is present
    assert system.predict({"radar": tracks}) == [LABELS[i] for i in system.logits({"radar": tracks}).argmax(axis=1)]


def test_system_predictor_refuses_missing_sensors_and_inputs(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    _write_system(tmp_path, onnx_files)
    system = SystemPredictor.load(str(tmp_path))
    embedding = np.zeros((2, DIM), np.float32)
    with pytest.raises(BundleError, match=r"fusion: preprocessing.sensors: missing input\(s\) \['radar'\]"):
        system.fusion.logits({"rf": embedding, "present": np.ones((2, 2), bool)})
    with pytest.raises(BundleError, match=r"unknown sensor\(s\) \['lidar'\]"):
        system.predict_proba({"lidar": embedding})
    with pytest.raises(BundleError, match="give at least one sensor"):
        system.predict_proba({"rf": None})
    with pytest.raises(BundleError, match="takes a dict of embeddings"):
        system.fusion.preprocess(embedding)
    storage.delete(tmp_path / "radar" / INFO_FILE)
    with pytest.raises(BundleError, match=r"sensor 'radar' named by the fusion bundle: .*radar/bundle.json"):
        SystemPredictor.load(str(tmp_path))


def test_log_bundle_to_mlflow_logs_a_loadable_onnx_model(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    import mlflow
    import mlflow.onnx
    from mlflow.tracking import MlflowClient

    bundle_dir = tmp_path / "bundle"
    _write_optical(str(bundle_dir), onnx_files)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with pytest.raises(BundleError, match="needs an active MLflow run"):
            log_bundle_to_mlflow(bundle_dir, "optical")
        experiment = mlflow.create_experiment("bundles", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            model_info = log_bundle_to_mlflow(bundle_dir, "optical")
        loaded = mlflow.onnx.load_model(model_info.model_uri)
        artifacts = {Path(a.path).name for a in MlflowClient().list_artifacts(run.info.run_id, "optical-bundle")}
    finally:
        mlflow.set_tracking_uri(previous)
    assert artifacts == {MODEL_FILE, INFO_FILE}
    images = _images()
    session = __import__("onnxruntime").InferenceSession(loaded.SerializeToString(), providers=["CPUExecutionProvider"])
    predictor = Predictor.load(str(bundle_dir))
    np.testing.assert_allclose(
        session.run(None, {"input": predictor.preprocess(images)})[0], predictor.logits(images), rtol=1e-6
    )
