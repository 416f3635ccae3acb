"""The ONNX side of TensorRT engine builds, checked with `onnx` alone (no TensorRT, no GPU): the
optimization profile of each input, whether a model fits the precision asked for, and the FP16 copy
that strongly typed TensorRT (11+) builds fp16 engines from. A bad input thus fails the same way on
any machine, before TensorRT is needed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("fp16", "int8")
_QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


class EngineBuildError(RuntimeError):
    """The ONNX model cannot become an engine (its shapes, its Q/DQ form, a parser or builder failure)."""


def profile_shapes(onnx_path: str | Path, max_batch: int) -> dict[str, dict[str, Any]]:
    """The optimization profile of every graph input: dim 0 = (1, max(1, max_batch // 2), max_batch),
    the other dims from the model, which must be static. A model exported with a fixed batch keeps it."""
    import onnx

    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    path = Path(onnx_path)
    model = onnx.load(str(path), load_external_data=False)
    initializers = {tensor.name for tensor in model.graph.initializer}
    shapes: dict[str, dict[str, Any]] = {}
    for value in model.graph.input:
        if value.name in initializers:  # IR < 4 lists weights as inputs too
            continue
        tensor = value.type.tensor_type
        dims = list(tensor.shape.dim) if tensor.HasField("shape") else []
        if not dims:
            raise EngineBuildError(f"{path.name}: input {value.name!r} has no shape or no batch dimension")
        rest = []
        for axis, dim in enumerate(dims[1:], start=1):
            if not dim.HasField("dim_value"):
                raise EngineBuildError(
                    f"{path.name}: input {value.name!r} has a dynamic dimension {axis} ({dim.dim_param or '?'}); "
                    "only the batch dimension (0) may be dynamic: export with fixed sizes for the others"
                )
            rest.append(int(dim.dim_value))
        if dims[0].HasField("dim_value"):
            fixed = int(dims[0].dim_value)
            log.warning(
                "%s: input %r has a fixed batch of %d; its engine takes only that batch", path.name, value.name, fixed
            )
            low, opt, high = fixed, fixed, fixed
        else:
            low, opt, high = 1, max(1, max_batch // 2), max_batch
        shapes[value.name] = {
            "min": [low, *rest],
            "opt": [opt, *rest],
            "max": [high, *rest],
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
        }
    if not shapes:
        raise EngineBuildError(f"{path.name}: the model has no inputs")
    return shapes


def check_engine_source(onnx_path: str | Path, precision: str) -> None:
    """The model fits the precision: fp16 from the FP32 ONNX (no Q/DQ); int8 from a QDQ ONNX in the
    form TensorRT implements: symmetric INT8 (int8 zero points of 0), float biases."""
    import onnx

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    path = Path(onnx_path)
    graph = onnx.load(str(path), load_external_data=False).graph
    qdq = [node for node in graph.node if node.op_type in _QDQ_OPS]
    if precision == "fp16":
        if qdq:
            raise EngineBuildError(
                f"{path.name}: fp16 engines are built from the FP32 ONNX, but this model has {len(qdq)} "
                "QuantizeLinear/DequantizeLinear nodes (a quantized model)"
            )
        return
    if not qdq:
        raise EngineBuildError(
            f"{path.name}: int8 engines are built from the static INT8 QDQ ONNX (explicit quantization), "
            "but this model has no QuantizeLinear/DequantizeLinear nodes"
        )
    problems = _int8_qdq_problems(graph)
    if problems:
        raise EngineBuildError(f"{path.name}: not a QDQ model TensorRT can build: " + "; ".join(problems))


def _int8_qdq_problems(graph: Any) -> list[str]:
    """What TensorRT's ONNX parser rejects in an INT8 QDQ graph: DequantizeLinear of anything but int8
    (onnxruntime quantizes biases to int32 by default) and zero points that are not int8 zeros."""
    import onnx
    from onnx import numpy_helper

    initializers = {tensor.name: tensor for tensor in graph.initializer}
    wide, asymmetric = [], []
    for node in (n for n in graph.node if n.op_type in _QDQ_OPS):
        name = node.name or node.output[0]
        data = initializers.get(node.input[0])
        if node.op_type == "DequantizeLinear" and data is not None and data.data_type != onnx.TensorProto.INT8:
            wide.append(name)
            continue
        zero_point = initializers.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero_point is None or zero_point.data_location == onnx.TensorProto.EXTERNAL:
            continue  # absent (0 by the spec) or not inspectable without loading external data
        if zero_point.data_type != onnx.TensorProto.INT8 or np.any(numpy_helper.to_array(zero_point) != 0):
            asymmetric.append(name)
    problems = []
    if wide:
        problems.append(
            f"{len(wide)} DequantizeLinear nodes dequantize a type other than int8 ({', '.join(wide[:3])}); "
            "quantized biases are int32: quantize with extra_options QuantizeBias=False"
        )
    if asymmetric:
        problems.append(
            f"{len(asymmetric)} Q/DQ nodes are not symmetric INT8 (int8 zero points equal to 0: "
            f"{', '.join(asymmetric[:3])}); quantize with activation_type=QInt8, weight_type=QInt8 and "
            "extra_options ActivationSymmetric=True, WeightSymmetric=True"
        )
    return problems


def float16_copy(onnx_path: Path, folder: Path) -> Path:
    """An FP16 copy of an FP32 model for strongly typed TensorRT; float32 inputs and outputs are kept
    (Casts at the edges), so callers feed and read the engine exactly as the FP32 ONNX. The converter
    is onnxruntime's own (as for the ORT fp16 variant), with its default op block list."""
    import onnx
    from onnxruntime.quantization.onnx_model import ONNXModel
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    # The converter appends its Cast nodes at the end of the node list; TensorRT's parser, like
    # onnx.checker, takes the nodes in topological order.
    ONNXModel(half).topological_sort()
    target = folder / f"{onnx_path.stem}.fp16.onnx"
    onnx.save(half, str(target))
    return target
