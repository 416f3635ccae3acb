"""Static INT8 quantization (QDQ) of an exported FP32 ONNX model with onnxruntime.

Static, not dynamic: ORT's dynamic INT8 runs convolutions through ConvInteger, which is several
times slower than FP32 on this CPU; static QDQ lets ORT fuse Q/DQ + Conv into QLinearConv.
`quantize_static_int8` takes calibration feeds for every graph input (images, embeddings, a bool
presence mask: non-float inputs pass through unquantized); `quantize_int8` is its image front end,
which runs calibration images through `to_model_input`, the same preprocessing training used, so
the activation ranges are those the deployed model sees.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    TensorsData,
    create_calibrator,
    quantize_static,
    save_tensors_data,
)
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
from onnxruntime.quantization.shape_inference import quant_pre_process

from rooivalk.data.transforms import to_model_input
from rooivalk.export._onnx_io import VariantError, atomic_output, graph_inputs, load_bare
from rooivalk.export.onnx_export import onnx_input_info

log = logging.getLogger(__name__)

_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}
# quantize_static's own default op types; passed explicitly so our calibrator and its quantizer agree.
_OP_TYPES = sorted(set(QDQRegistry) | set(QLinearOpsRegistry))
# quantize_static's extra_options -> calibrator options, as quantize_static maps them.
_CALIBRATOR_OPTIONS = {
    "CalibTensorRangeSymmetric": "symmetric",
    "CalibMovingAverage": "moving_average",
    "CalibMovingAverageConstant": "averaging_constant",
    "CalibMaxIntermediateOutputs": "max_intermediate_outputs",
    "CalibPercentile": "percentile",
}
_PREPROCESS_CHUNK = 256  # images preprocessed at a time (to_model_input upsamples: bound its peak)


@dataclass(frozen=True)
class QuantizeConfig:
    """Quantization choices; the defaults are the ones measured best on the real case.

    Measured on EfficientNet-Lite0 fine-tuned on Fashion-MNIST at 48 px (FP32 ONNX 0.859 test accuracy,
    512 calibration images): all-INT8 0.848-0.850 whatever the calibration (MinMax, Percentile 99.99/
    99.999, Entropy, 2048 images); the stem conv in FP32 0.854-0.855; stem + the first block's
    depthwise conv in FP32 0.858, with unchanged latency (0.30 ms at batch 1). 8-bit noise added to
    the first, full-resolution feature maps propagates through every later layer; those two convs
    are a small share of the compute. per_channel weights are essential (per-tensor: 0.26), because
    depthwise channels' ranges differ by orders of magnitude; reduce_range costs 5 points.
    QUInt8 activations + QInt8 weights is the U8S8 path ORT runs fastest on x86 (S8S8: 7x slower).
    """

    method: Literal["minmax", "percentile", "entropy"] = "minmax"
    per_channel: bool = True
    reduce_range: bool = False
    percentile: float = 99.999
    # Leading Conv nodes (graph order) left in FP32; their inputs are then not quantized either.
    fp32_leading_convs: int = 2
    batch_size: int = 32
    extra_options: dict[str, Any] = field(default_factory=dict)
    # "qint8" + symmetric ranges + unquantized biases is what TensorRT's explicit quantization takes
    # (zero points 0, no int32 bias dequantization): see TENSORRT_QDQ.
    activation_type: Literal["quint8", "qint8"] = "quint8"
    # all: every op type ORT quantizes; weighted: only Conv/MatMul/Gemm nodes that have a weight initializer
    # (rooivalk.models.fake_quant simulates exactly those). Measured on the demo's radar SSM and CREPE
    # acoustic models: all lost 17.7 and 2.2 points (its Add/Concat/Mul nodes: sums over the scan, the
    # front end's products), weighted lost none (docs/results/compression).
    operators: Literal["all", "weighted"] = "all"


# The QDQ flavour TensorRT builds INT8 engines from (ORT's fast x86 U8S8 flavour is refused by it).
TENSORRT_QDQ = QuantizeConfig(
    activation_type="qint8",
    fp32_leading_convs=0,
    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
)


class FeedsCalibrationReader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds {input name: array (N, ...)} to the calibrator, `batch_size` rows at a time, in order."""

    def __init__(self, feeds: Mapping[str, np.ndarray], batch_size: int) -> None:
        counts = {name: len(array) for name, array in feeds.items()}
        if not counts or len(set(counts.values())) != 1 or not next(iter(counts.values())):
            raise ValueError(f"calibration feeds need the same number (> 0) of rows per input, got {counts}")
        self._feeds = dict(feeds)
        self._count = next(iter(counts.values()))
        self._batch_size = max(1, batch_size)
        self._iterator: Iterator[dict[str, np.ndarray]] = self._batches()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, self._count, self._batch_size):
            yield {name: array[start : start + self._batch_size] for name, array in self._feeds.items()}

    def __len__(self) -> int:
        return -(-self._count // self._batch_size)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iterator, None)

    def rewind(self) -> None:
        self._iterator = self._batches()


def leading_convs(onnx_path: str | Path, count: int) -> list[str]:
    """Names of the first `count` Conv nodes; ONNX stores nodes in topological order."""
    import onnx

    if count <= 0:
        return []
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type == "Conv"][:count]


WEIGHTED_OPS = ("Conv", "MatMul", "Gemm")


def weighted_nodes(onnx_path: str | Path) -> list[str]:
    """Names of the Conv, MatMul and Gemm nodes that take a weight: an initializer among their inputs
    (after preprocessing folded Transpose(W) and the like). A MatMul of two activations (attention's
    scores) is left out: nothing in training simulated its rounding."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    weights = {initializer.name for initializer in graph.initializer}
    return [
        node.name
        for node in graph.node
        if node.op_type in WEIGHTED_OPS and any(name in weights for name in node.input[:2])
    ]


def quantize_static_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: Mapping[str, np.ndarray],
    config: QuantizeConfig,
) -> Path:
    """Quantize `fp32_path` to a static INT8 QDQ model at `out_path` (written atomically).

    `calibration` holds model-ready rows for every graph input (float32, bool, ...), each seen once.
    Nodes that touch a tensor which is not finite on the calibration data stay FP32: a transformer's
    key-padding mask is -inf where a token is absent (torch's masked_fill), and an 8-bit range that
    includes infinity would wipe out every finite score next to it.
    """
    source, target = Path(fp32_path), Path(out_path)
    where = f"int8_static: {target} from {source}"
    if not source.is_file():
        raise VariantError(f"{where}: no such FP32 model file")
    try:
        model = load_bare(source)
    except Exception as error:  # a truncated or foreign file
        raise VariantError(f"{where}: cannot read the model: {error}") from error
    inputs = graph_inputs(model)
    feeds = _model_feeds(inputs, calibration, where)
    batch = config.batch_size if all(i.dynamic_batch for i in inputs) else 1
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".quantize-") as work_dir:
        work = Path(work_dir)
        try:
            prepared = prepare_for_quantization(model, work)
            ranges, nonfinite = _calibrate(prepared, FeedsCalibrationReader(feeds, batch), config, work)
            included = weighted_nodes(prepared) if config.operators == "weighted" else None
            if included == []:  # ORT reads an empty list as "every node"
                raise VariantError(f"{where}: operators weighted, but no Conv/MatMul/Gemm node has a weight")
            excluded = (
                leading_convs(prepared, config.fp32_leading_convs)
                + _nodes_touching(prepared, nonfinite)
                + signal_frontend_nodes(prepared)
            )
            cache = work / "ranges.json"
            save_tensors_data(ranges, cache)
            with atomic_output(target) as tmp:
                quantize_static(
                    str(prepared),
                    str(tmp),
                    None,  # the ranges come from the cache computed above
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(WEIGHTED_OPS) if included else _OP_TYPES,
                    per_channel=config.per_channel,
                    reduce_range=config.reduce_range,
                    activation_type=QuantType.QInt8 if config.activation_type == "qint8" else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=excluded,
                    nodes_to_quantize=included,
                    calibrate_method=_METHODS[config.method],
                    extra_options=_extra_options(config),
                    calibration_cache_path=cache,
                )
        except Exception as error:  # the message must say which model and file failed
            raise VariantError(f"{where}: {type(error).__name__}: {error}") from error
    log.info(
        "quantized %s -> %s (%s operators, %s calibration, %d rows, FP32 nodes %s)",
        source.name,
        target.name,
        config.operators,
        config.method,
        len(next(iter(feeds.values()))),
        excluded,
    )
    return target


def quantize_int8(
    fp32_path: str | Path,
    int8_path: str | Path,
    calibration_images: np.ndarray,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_chans: int,
    config: QuantizeConfig | None = None,
) -> Path:
    """Quantize an image classifier at `fp32_path` to a static INT8 QDQ model at `int8_path`.

    `calibration_images` are uint8 (N, H, W, C) training images; every one of them is seen once.
    """
    input_name, _ = onnx_input_info(fp32_path)
    chunks = [
        to_model_input(calibration_images[start : start + _PREPROCESS_CHUNK], input_size, mean, std, in_chans).numpy()
        for start in range(0, len(calibration_images), _PREPROCESS_CHUNK)
    ]
    images = np.concatenate(chunks) if chunks else np.zeros((0,), np.float32)
    return quantize_static_int8(fp32_path, int8_path, {input_name: images}, config or QuantizeConfig())


def _model_feeds(inputs: list[Any], calibration: Mapping[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Calibration arrays keyed and typed as the graph inputs; a missing or unknown name is an error."""
    names = [i.name for i in inputs]
    missing = [name for name in names if name not in calibration]
    unknown = [name for name in calibration if name not in names]
    if missing or unknown:
        raise VariantError(
            f"{where}: calibration data must have exactly the model inputs {names}; "
            f"missing {missing}, unknown {unknown}"
        )
    feeds = {i.name: np.ascontiguousarray(calibration[i.name], dtype=i.dtype) for i in inputs}
    counts = {name: len(array) for name, array in feeds.items()}
    if len(set(counts.values())) != 1 or not counts[names[0]]:
        raise VariantError(f"{where}: calibration inputs need the same number (> 0) of rows, got {counts}")
    return feeds


def prepare_for_quantization(model: Any, work: Path) -> Path:
    """`work/prepared.onnx`: ORT's quantization preprocessing (shape inference, graph optimization:
    BatchNorm and constant folding) of `model`, so that ranges are collected on the graph that will
    actually be quantized and weights reached through foldable ops (Unsqueeze(W) in front of a GRU)
    become initializers the quantizers can see."""
    import onnx

    work = work.resolve()  # absolute: the preprocessing runs from inside it
    bare, prepared = work / "bare.onnx", work / "prepared.onnx"
    onnx.save(model, str(bare))
    # ORT's symbolic shape inference leaves sym_shape_infer_temp.onnx and <uuid>.data files in the
    # current directory when it gives up on a graph (measured on an ensemble graph with ai.onnx.ml
    # trees): running it from `work` keeps them in the scratch folder. A step is a process of its own.
    with contextlib.chdir(work):
        try:
            quant_pre_process(str(bare), str(prepared), skip_symbolic_shape=False)
        except Exception as error:  # noqa: BLE001  (ORT's symbolic shape inference lacks some ops; ONNX's still runs)
            log.warning("symbolic shape inference failed (%s); preprocessing without it", error)
            quant_pre_process(str(bare), str(prepared), skip_symbolic_shape=True)
    # Exclusion lists match node names, so every node needs one.
    processed = onnx.load(str(prepared))
    unnamed = [node for node in processed.graph.node if not node.name]
    for index, node in enumerate(unnamed):
        node.name = f"rooivalk_{node.op_type}_{index}"
    if unnamed:
        onnx.save(processed, str(prepared))
    return prepared


def _calibrate(
    prepared: Path, reader: FeedsCalibrationReader, config: QuantizeConfig, work: Path
) -> tuple[Any, set[str]]:
    """(activation ranges by config.method, tensors not finite on the data). MinMax runs first in any
    case: it is cheap and finds the non-finite tensors, which the histogram calibrators (entropy,
    percentile) cannot take (numpy raises on an infinite histogram range); those tensors are then
    left out of the histograms and their nodes kept FP32."""
    extra = _extra_options(config)
    options = {key: extra[name] for name, key in _CALIBRATOR_OPTIONS.items() if name in extra}
    minmax = create_calibrator(
        prepared, _OP_TYPES, str(work / "minmax.onnx"), CalibrationMethod.MinMax, extra_options=options
    )
    minmax.collect_data(reader)
    ranges = minmax.compute_data()
    del minmax  # releases its session before the next one is built
    nonfinite = {name for name, data in ranges.items() if not np.isfinite(np.asarray(data.range_value)).all()}
    if config.method != "minmax":
        reader.rewind()
        calibrator = create_calibrator(
            prepared, _OP_TYPES, str(work / "histogram.onnx"), _METHODS[config.method], extra_options=options
        )
        calibrator.tensors_to_calibrate -= nonfinite  # collect_data histograms only this set
        calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
        del calibrator
    finite = {name: data for name, data in ranges.items() if name not in nonfinite}
    return TensorsData(ranges.calibration_method, finite), nonfinite


def signal_frontend_nodes(model_path: str | Path) -> list[str]:
    """Nodes that feed a Log (the in-graph spectrogram front ends: DFT MatMuls, power, mel filterbank).

    Their outputs span many orders of magnitude and the Log then magnifies the 8-bit error of the
    small ones. Measured on the CREPE acoustic model (log-mel front end) at demo scale: INT8 with the
    front end quantized lost 47 (static) and 57 (dynamic) points of test accuracy.
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    producer = {output: node for node in graph.node for output in node.output}
    frontier = [name for node in graph.node if node.op_type == "Log" for name in node.input]
    found: dict[str, None] = {}
    while frontier:
        node = producer.get(frontier.pop())
        if node is None or node.name in found:
            continue
        found[node.name] = None
        frontier.extend(node.input)
    return list(found)


def _nodes_touching(prepared: Path, tensors: set[str]) -> list[str]:
    import onnx

    if not tensors:
        return []
    graph = onnx.load(str(prepared), load_external_data=False).graph
    return [node.name for node in graph.node if tensors.intersection([*node.input, *node.output])]


def _extra_options(config: QuantizeConfig) -> dict[str, Any]:
    extra = {"CalibTensorRangeSymmetric": False, **config.extra_options}
    if config.method == "percentile":
        extra.setdefault("CalibPercentile", config.percentile)
    return extra
