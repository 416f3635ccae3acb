"""Run a deployment bundle: stored samples in, calibrated probabilities and labels out.

`Predictor` runs one bundle (a single model, a sensor encoder or the fusion model) with ONNX
Runtime; `SystemPredictor` chains the sensor encoders into the fusion model, the way the edge
device runs a multi-sensor system, with absent sensors masked out. A detector's bundle
(preprocessing kind "detection") answers `Predictor.detect` instead: images of any size in, boxes in
each image's own pixels out.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rooivalk import storage
from rooivalk.export.bundle import (
    MODEL_FILE,
    PRESENT_INPUT,
    BundleError,
    BundleInfo,
    join,
    read_bundle_info,
)

if TYPE_CHECKING:
    from rooivalk.models.detection_metrics import Detections
    from rooivalk.models.letterbox import Letterbox

BATCH = 256  # rows per ONNX Runtime call: bounds memory on large inputs
DETECT_BATCH = 16  # images per ONNX Runtime call in detect(): a letterboxed 384 x 640 image is 2.9 MB
FUSION_DIR = "fusion"


def _image(config: Mapping[str, Any], images: np.ndarray) -> np.ndarray:
    from rooivalk.data.transforms import to_model_input

    images = images[..., None] if images.ndim == 3 else images  # (N, H, W) grayscale -> (N, H, W, 1)
    tensor = to_model_input(images, config["input_size"], config["mean"], config["std"], config["in_chans"])
    return tensor.numpy()


def _iq(_config: Mapping[str, Any], iq: np.ndarray) -> np.ndarray:
    # Imported on use: the RF model module pulls in the model registry, which image-only users skip.
    from rooivalk.models.rf_cnn_transformer import iq_to_input

    return iq_to_input(iq)


def _float32(_config: Mapping[str, Any], samples: np.ndarray) -> np.ndarray:
    return np.asarray(samples, dtype=np.float32)


# preprocessing.kind -> stored samples (N, ...) -> float32 model input: the same functions training
# and the feature cache use (rooivalk.models.sensor_encoding). "embeddings" takes a dict, see _fusion_feeds.
PREPROCESSORS: dict[str, Callable[[Mapping[str, Any], np.ndarray], np.ndarray]] = {
    "image": _image,
    "iq": _iq,
    "float32": _float32,
}


# Kinds whose feeds are built from structured samples (a dict of embeddings, ragged sequences, table
# rows, images of any size) by Predictor itself rather than by one PREPROCESSORS function.
STRUCTURED_KINDS = ("embeddings", "sequence", "table", "detection")
DETECTION = "detection"


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits.astype(np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)  # exp overflows without the shift
    exp = np.exp(scaled)
    probabilities: np.ndarray = (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)
    return probabilities


class Predictor:
    """One bundle loaded into an ONNX Runtime session."""

    def __init__(self, uri: str, info: BundleInfo, session: Any, workdir: Any = None) -> None:
        self.uri, self.info, self.session = uri, info, session
        self._workdir = workdir  # a TemporaryDirectory holding a downloaded model; removed with self
        self.unseen: dict[str, int] = {}  # kind "table": unseen categories per column in the last call

    @classmethod
    def load(cls, uri: str, providers: list[str] | None = None) -> Predictor:
        """Load the bundle at `uri` (path or s3:// prefix); model.onnx must match bundle.json's sha256."""
        from rooivalk.export.benchmark import ort_session

        info = read_bundle_info(uri)
        model_uri = join(uri, MODEL_FILE)
        data = storage.read_bytes(model_uri, sha256=info.files[MODEL_FILE])  # IntegrityError names the file
        workdir = None
        path = Path(storage.parse_uri(model_uri).key)
        if storage.parse_uri(uri).is_s3:
            workdir = tempfile.TemporaryDirectory(prefix="rooivalk-bundle-")
            path = Path(workdir.name) / MODEL_FILE
            path.write_bytes(data)
        try:
            session = ort_session(path, providers=providers)
        except Exception as error:
            raise BundleError(f"{model_uri}: ONNX Runtime cannot load it ({type(error).__name__}: {error})") from None
        return cls(uri, info, session, workdir)

    @property
    def kind(self) -> str:
        return str(self.info.preprocessing["kind"])

    def preprocess(self, samples: np.ndarray) -> np.ndarray:
        """Stored samples (N, ...) -> float32 model input, by preprocessing.kind."""
        self._not_detection("preprocess")
        if self.kind not in PREPROCESSORS:
            what = {"embeddings": "a dict of embeddings", "sequence": "raw sequences", "table": "raw table rows"}
            raise BundleError(
                f"{self.uri}: preprocessing.kind {self.kind!r} takes {what.get(self.kind, 'structured samples')} "
                "through predict/logits, not stored samples"
            )
        return PREPROCESSORS[self.kind](self.info.preprocessing, np.asarray(samples))

    def _feeds(self, samples: Any) -> dict[str, np.ndarray]:
        if self.kind == "embeddings":
            return self._fusion_feeds(samples)
        if self.kind == "sequence":
            return self._sequence_feeds(samples)
        if self.kind == "table":
            return {self.info.inputs[0].name: self._table_inputs(samples)}
        return {self.info.inputs[0].name: self.preprocess(samples)}

    def _sequence_feeds(self, samples: Any) -> dict[str, np.ndarray]:
        """Raw sequences: an array (N, T, F) or a list of (T_i, F) arrays of any lengths, the features in
        preprocessing.features order -> edge-padded or truncated to the trained length, standardized."""
        from rooivalk.data.sequence_reader import pad_or_truncate

        config = self.info.preprocessing
        features = len(config["features"])
        sequences = [np.asarray(sequence, dtype=np.float32) for sequence in samples]
        if not sequences:
            raise BundleError(f"{self.uri}: no samples given")
        for index, sequence in enumerate(sequences):
            if sequence.ndim != 2 or sequence.shape[1] != features or len(sequence) == 0:
                raise BundleError(
                    f"{self.uri}: sequence {index} has shape {sequence.shape}; this model takes (T >= 1, {features}) "
                    f"frames of {config['features'][:3]}..."
                )
        padded, lengths = pad_or_truncate(sequences, int(config["length"]))
        mean, std = np.asarray(config["mean"], np.float32), np.asarray(config["std"], np.float32)
        return {"sequences": ((padded - mean) / std).astype(np.float32), "lengths": lengths}

    def _table_inputs(self, rows: Any) -> np.ndarray:
        """Raw rows (a pandas DataFrame, or a list of {column: value}) -> the model inputs; categories the
        training split never had are encoded as unseen and counted in `self.unseen`."""
        import pandas as pd

        from rooivalk.data.table_dataset import TableDatasetInfo, encode_rows, model_inputs

        info = TableDatasetInfo.model_validate(self.info.preprocessing["table"])
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        try:
            numeric, codes, self.unseen = encode_rows(info, frame)
        except ValueError as error:
            raise BundleError(f"{self.uri}: {error}") from None
        return model_inputs(info, numeric, codes)

    def _fusion_feeds(self, samples: Any) -> dict[str, np.ndarray]:
        """{sensor: (N, D) float32, "present": bool (N, S)}, checked against the bundle's sensors."""
        sensors = list(self.info.preprocessing["sensors"])
        if not isinstance(samples, Mapping):
            raise BundleError(
                f"{self.uri}: preprocessing.kind 'embeddings' takes {{sensor: (N, D), 'present': (N, S)}}"
            )
        missing = [name for name in [*sensors, PRESENT_INPUT] if name not in samples]
        unknown = sorted(set(samples) - {*sensors, PRESENT_INPUT})
        if missing or unknown:
            raise BundleError(
                f"{self.uri}: preprocessing.sensors: missing input(s) {missing}, unknown {unknown}; "
                f"the fusion model takes {sensors} and {PRESENT_INPUT!r}"
            )
        feeds = {name: np.asarray(samples[name], dtype=np.float32) for name in sensors}
        present = np.asarray(samples[PRESENT_INPUT], dtype=bool)
        rows = {len(array) for array in feeds.values()}
        if present.shape[1:] != (len(sensors),) or rows != {len(present)}:
            raise BundleError(
                f"{self.uri}: inputs: {PRESENT_INPUT!r} must be bool (N, {len(sensors)}) with N the embeddings' rows; "
                f"got {present.shape} for rows {sorted(rows)}"
            )
        return {**feeds, PRESENT_INPUT: present}

    def _not_detection(self, method: str) -> None:
        """A classifier's method called on a detector's bundle: say which method a detector has."""
        if self.kind == DETECTION:
            raise BundleError(
                f"{self.uri}: bundle {self.info.name!r} is a detector (preprocessing.kind 'detection'): "
                f"{method}() is a classifier's; call detect(images) for its boxes"
            )

    def _run(self, output: str, samples: Any) -> np.ndarray:
        feeds = self._feeds(samples)
        count = len(next(iter(feeds.values())))
        chunks = []
        for start in range(0, count, BATCH):
            batch = {name: array[start : start + BATCH] for name, array in feeds.items()}
            try:
                chunks.append(self.session.run([output], batch)[0])
            except Exception as error:  # ORT's messages name neither the bundle nor the model
                raise BundleError(f"{self.uri}: running {self.info.name!r} ({type(error).__name__}: {error})") from None
        if not chunks:
            raise BundleError(f"{self.uri}: no samples given")
        return np.concatenate(chunks)

    def logits(self, samples: Any) -> np.ndarray:
        """Raw samples (or, for kind "embeddings", the dict of embeddings and mask) -> logits (N, K)."""
        self._not_detection("logits")
        return self._run(self.info.logits_output, samples)

    def predict_proba(self, samples: Any) -> np.ndarray:
        """softmax(logits / temperature): calibrated probabilities, (N, K) float32."""
        self._not_detection("predict_proba")
        return softmax(self.logits(samples), self.info.temperature)

    def predict(self, samples: Any) -> list[str]:
        self._not_detection("predict")
        return [self.info.labels[index] for index in self.logits(samples).argmax(axis=-1)]

    def embed(self, samples: Any) -> np.ndarray:
        """The encoder's embedding (N, D); only sensor encoder bundles have one."""
        self._not_detection("embed")
        if self.info.embedding_output is None:
            raise BundleError(
                f"{self.uri}: embedding_output: bundle {self.info.name!r} has none (outputs "
                f"{[spec.name for spec in self.info.outputs]}); only sensor encoders embed"
            )
        return self._run(self.info.embedding_output, samples)

    def detect(self, images: Sequence[Any], score_threshold: float | None = None) -> list[dict[str, Any]]:
        """A detector bundle's detections on `images` (uint8 (H, W, 3) or (H, W) arrays, or PIL images,
        each of any size): per image {"boxes" float32 (N, 4) x1, y1, x2, y2 in the image's own pixels,
        "scores" (N,), "labels" int64 (N,), "class_names" [N names]}, best score first.

        Each image is letterboxed as training and evaluation did (rooivalk.models.letterbox), the graph's
        dense outputs go through the model's post-process (per-level top-k, per-class NMS; an ensemble's
        members each with its own, then their boxes fused; per-class temperatures applied when the export
        fitted them), and the detections scoring >= the bundle's operating threshold, or `score_threshold`,
        are kept. A `score_threshold` below the post-process's own candidate threshold lowers that one too
        (every member's, in an ensemble).
        """
        if self.kind != DETECTION:
            raise BundleError(
                f"{self.uri}: bundle {self.info.name!r} has preprocessing.kind {self.kind!r}, not a detector's; "
                "detect() needs a 'detection' bundle: call predict(samples) for its labels"
            )
        from rooivalk.models.letterbox import letterbox

        config = self.info.preprocessing
        size = (int(config["input_height"]), int(config["input_width"]))
        keep = float(config["operating_threshold"] if score_threshold is None else score_threshold)
        settings = dict(config["postprocess"])
        level_sizes = settings.pop("level_sizes", None)
        # The candidate threshold is on raw scores; `keep` is on the bundle's final ones, calibrated when
        # the bundle has per-class temperatures: lowered to the raw score that calibrates to `keep`.
        candidates = keep
        if settings.get("class_temperatures") is not None:
            from rooivalk.models.detection_calibration import raw_score_threshold

            candidates = raw_score_threshold(keep, settings["class_temperatures"], settings.get("class_biases"))
        from rooivalk.export.detector_postprocess import with_candidate_threshold

        settings = with_candidate_threshold(settings, candidates)  # an ensemble's members' thresholds too
        tensors = [_rgb_tensor(self.uri, index, image) for index, image in enumerate(images)]
        if not tensors:
            raise BundleError(f"{self.uri}: no images given")
        found: list[dict[str, Any]] = []
        for start in range(0, len(tensors), DETECT_BATCH):
            boxed = [letterbox(image, size, config["fill"]) for image in tensors[start : start + DETECT_BATCH]]
            batch = np.stack([canvas.numpy() for canvas, _ in boxed]).astype(np.float32) / np.float32(255)
            try:
                placements = [placement for _, placement in boxed]
                batch_detections = detect_letterboxed(self.session, batch, settings, level_sizes, placements)
            except Exception as error:  # ORT's messages name neither the bundle nor the model
                raise BundleError(f"{self.uri}: running {self.info.name!r} ({type(error).__name__}: {error})") from None
            for detections in batch_detections:  # in each image's own pixels
                kept = detections.scores >= keep
                labels = detections.labels[kept]
                found.append(
                    {
                        "boxes": detections.boxes[kept],
                        "scores": detections.scores[kept],
                        "labels": labels,
                        "class_names": [self.info.labels[int(label)] for label in labels],
                    }
                )
        return found


def detect_letterboxed(
    session: Any,
    images: np.ndarray,
    settings: Mapping[str, Any],
    level_sizes: Sequence[int] | None,
    placements: Sequence[Letterbox] | None = None,
) -> list[Detections]:
    """A detector graph's Detections, in letterbox pixels, of letterboxed float32 images (B, 3, H, W) in
    [0, 1], post-processed with `settings` (rooivalk.export.detector_postprocess.detections_from_outputs's: NMS,
    an ensemble's fusion, per-class temperatures): what detect() runs and the export step scores every
    variant with. With `placements` (each image's Letterbox) the detections are in the images' own pixels."""
    from rooivalk.export.detector_onnx import INPUT_NAME, OUTPUT_NAMES
    from rooivalk.export.detector_postprocess import detections_from_outputs

    boxes, scores = session.run(OUTPUT_NAMES, {INPUT_NAME: images})
    size = (int(images.shape[-1]), int(images.shape[-2]))
    return detections_from_outputs(boxes, scores, settings, level_sizes, size, placements)


def _torch_tensor(array: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(array))


def _rgb_tensor(uri: str, index: int, image: Any) -> Any:
    """uint8 (3, H, W) of one image for detect(): a PIL image in RGB, or a uint8 (H, W, 3) or grayscale
    (H, W) / (H, W, 1) array, gray repeated to three channels as rooivalk.models.detector_inference.read_rgb."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image, without importing PIL here
        image = np.asarray(image.convert("RGB"), dtype=np.uint8)
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (1, 3) or 0 in array.shape:
        raise BundleError(
            f"{uri}: image {index} is {array.dtype} {array.shape}; detect() takes uint8 (H, W, 3) or (H, W) "
            "arrays or PIL images"
        )
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    # (H, W, 3) memory viewed as (3, H, W), as read_rgb gives it: the resize kernels see the same layout.
    return _torch_tensor(array).permute(2, 0, 1)


class SystemPredictor:
    """Sensor encoder bundles at root/<sensor>/ feeding the fusion bundle at root/fusion/."""

    def __init__(self, root: str, fusion: Predictor, encoders: dict[str, Predictor]) -> None:
        self.root, self.fusion, self.encoders = root, fusion, encoders
        self.sensors = list(fusion.info.preprocessing["sensors"])
        self.dims = {name: int(dim) for name, dim in fusion.info.preprocessing["dims"].items()}

    @classmethod
    def load(cls, root: str, providers: list[str] | None = None) -> SystemPredictor:
        fusion = Predictor.load(join(root, FUSION_DIR), providers)
        if fusion.kind != "embeddings":
            raise BundleError(f"{fusion.uri}: preprocessing.kind is {fusion.kind!r}; a fusion bundle has 'embeddings'")
        encoders: dict[str, Predictor] = {}
        for sensor in fusion.info.preprocessing["sensors"]:
            try:
                encoders[sensor] = Predictor.load(join(root, sensor), providers)
            except BundleError as error:
                raise BundleError(f"{root}: sensor {sensor!r} named by the fusion bundle: {error}") from None
            if encoders[sensor].info.embedding_output is None:
                raise BundleError(f"{encoders[sensor].uri}: embedding_output: sensor {sensor!r} bundle has none")
        return cls(root, fusion, encoders)

    @property
    def labels(self) -> list[str]:
        return self.fusion.info.labels

    def _embeddings(self, samples: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray]:
        unknown = sorted(set(samples) - set(self.sensors))
        if unknown:
            raise BundleError(f"{self.root}: unknown sensor(s) {unknown}; this system has {self.sensors}")
        given = {name: array for name, array in samples.items() if array is not None}
        rows = {name: len(array) for name, array in given.items()}
        if not rows or len(set(rows.values())) != 1:
            raise BundleError(f"{self.root}: give at least one sensor, all with the same number of rows; got {rows}")
        count = next(iter(rows.values()))
        feeds: dict[str, np.ndarray] = {}
        for sensor in self.sensors:
            array = given.get(sensor)
            # An absent sensor: zeros that the mask tells the fusion model to ignore.
            feeds[sensor] = (
                np.zeros((count, self.dims[sensor]), np.float32)
                if array is None
                else self.encoders[sensor].embed(array)
            )
        feeds[PRESENT_INPUT] = np.array([[name in given for name in self.sensors]] * count, dtype=bool)
        return feeds

    def logits(self, samples: Mapping[str, np.ndarray | None]) -> np.ndarray:
        return self.fusion.logits(self._embeddings(samples))

    def predict_proba(self, samples: Mapping[str, np.ndarray | None]) -> np.ndarray:
        """samples[sensor]: stored samples (N, ...), or None / no key for an absent sensor."""
        return self.fusion.predict_proba(self._embeddings(samples))

    def predict(self, samples: Mapping[str, np.ndarray | None]) -> list[str]:
        return [self.labels[index] for index in self.logits(samples).argmax(axis=-1)]
