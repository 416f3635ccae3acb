"""Precision variants of an exported FP32 ONNX model: fp16, static INT8 (QDQ), dynamic INT8.

Every variant keeps the FP32 model's graph inputs and outputs (names, float32/bool types, dynamic
batch), so one caller feeds them all alike; the export step scores each on the test split and
ships the fastest one within the plan's accuracy tolerance.

- fp16: weights and compute in float16, float32 at the graph's edges (Cast nodes).
- int8_static: QDQ with calibrated activation ranges (rooivalk.export.quantize); the fast path for
  CNNs on x86 (QLinearConv).
- int8_dynamic: INT8 weights, activations quantized per run. MatMul/Gemm (ORT rewrites Gemm as
  MatMul + Add), LSTM and the contrib Attention op through ORT; GRU weights through our own
  weight-only pass (ORT has no dynamic GRU). Convolutions stay FP32: ORT's dynamic ConvInteger is
  several times slower than FP32 on x86.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rooivalk.export._onnx_io import VariantError, atomic_output, load_bare
from rooivalk.export.quantize import (
    FeedsCalibrationReader,
    QuantizeConfig,
    prepare_for_quantization,
    quantize_static_int8,
    signal_frontend_nodes,
)

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "int8_static", "int8_dynamic"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8_static", "int8_dynamic")
# Weight-quantized op types ORT's quantize_dynamic implements, beyond MatMul/Gemm (when present).
_DYNAMIC_EXTRA_OP_TYPES = ("Attention", "LSTM")

__all__ = [
    "PRECISIONS",
    "FeedsCalibrationReader",
    "Precision",
    "QuantizeConfig",
    "VariantError",
    "build_variant",
    "convert_fp16",
    "quantize_dynamic_int8",
    "quantize_static_int8",
    "variant_file",
]


def variant_file(precision: Precision) -> str:
    """The file name of a variant inside a model's export folder: model_<precision>.onnx."""
    if precision not in PRECISIONS:
        raise VariantError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    return f"model_{precision}.onnx"


def build_variant(
    precision: Precision,
    fp32_path: str | Path,
    out_dir: str | Path,
    calibration: dict[str, np.ndarray] | None,
    config: QuantizeConfig | None = None,
) -> Path:
    """Write the `precision` variant of `fp32_path` to `out_dir/variant_file(precision)`.

    fp32 is the source itself (no copy). int8_static needs `calibration`: model-ready rows for every
    graph input, e.g. {"input": float32 (N, C, S, S)} or {"radar": ..., "present": bool (N, S)}.
    """
    source = Path(fp32_path)
    target = Path(out_dir) / variant_file(precision)
    if not source.is_file():
        raise VariantError(f"{precision}: no FP32 model file at {source}")
    if precision == "fp32":
        return source
    if target.resolve() == source.resolve():
        raise VariantError(f"{precision}: {target} would overwrite its own source")
    if precision == "fp16":
        return convert_fp16(source, target)
    if precision == "int8_dynamic":
        return quantize_dynamic_int8(source, target)
    if calibration is None:
        raise VariantError(f"int8_static: {target} needs calibration data (none given) to build from {source}")
    return quantize_static_int8(source, target, calibration, config or QuantizeConfig())


def convert_fp16(fp32_path: str | Path, out_path: str | Path) -> Path:
    """Convert to float16 weights and compute, inputs and outputs kept float32 (written atomically).

    onnxruntime's own converter (onnxruntime.transformers.float16, no extra dependency) with its
    default op block list, the ops ORT's authors keep FP32 for want of float16 support (ML ops,
    Range, TopK, NonMaxSuppression, ...). Nothing more is blocked. ORT's CPU provider lacks float16
    kernels for most ops, but at session creation its InsertCastTransformer runs such a node in
    float32 between Casts, so the model still loads and runs here (measured with ORT 1.31 on x86:
    Conv, Gemm, MatMul, GRU, Add, Mul, LayerNormalization all get Casts, so on this CPU fp16 is half
    the bytes and no faster), while a GPU runs it in float16. Blocking those ops would keep their
    weights float32 and the file would no longer be half the size. The result is not opened here:
    ORT can crash the process on an FP16 graph it accepts, so rooivalk.export.selection opens every
    variant in a child process first (probe_in_subprocess).
    """
    import onnx
    from onnxruntime.quantization.onnx_model import ONNXModel
    from onnxruntime.transformers.float16 import convert_float_to_float16

    source, target = Path(fp32_path), Path(out_path)
    where = f"fp16: {target} from {source}"
    if not source.is_file():
        raise VariantError(f"{where}: no such FP32 model file")
    try:
        half = convert_float_to_float16(load_bare(source), keep_io_types=True)
        # The converter appends its Cast nodes at the end of the node list; other runtimes and
        # onnx.checker want topological order.
        ONNXModel(half).topological_sort()
        with atomic_output(target) as tmp:
            # Not loaded here: ORT can crash the process on an FP16 graph it accepts (the RF
            # CNN+Transformer, onnxruntime 1.31.1); selection.probe_in_subprocess opens it safely.
            onnx.save(half, str(tmp))
    except Exception as error:  # the message must say which model and file failed
        raise VariantError(f"{where}: {type(error).__name__}: {error}") from error
    log.info("fp16 %s -> %s (%.2f of the FP32 size)", source.name, target.name, _size_ratio(target, source))
    return target


def quantize_dynamic_int8(fp32_path: str | Path, out_path: str | Path) -> Path:
    """INT8 weights for MatMul/Gemm, LSTM, Attention and GRU, activations quantized at run time."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, target = Path(fp32_path), Path(out_path)
    where = f"int8_dynamic: {target} from {source}"
    if not source.is_file():
        raise VariantError(f"{where}: no such FP32 model file")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".quantize-") as work, atomic_output(target) as tmp:
            # Annotations stripped before and after preprocessing (load_bare): the exporter annotates
            # initializers too, and quantize_dynamic rewrites Gemm(transB=1) as a MatMul on the
            # transposed weight under the same name, which contradicts such an annotation.
            model = load_bare(prepare_for_quantization(load_bare(source), Path(work)))
            present = {node.op_type for node in model.graph.node}
            op_types = ["MatMul", "Gemm", *(op for op in _DYNAMIC_EXTRA_OP_TYPES if op in present)]
            grus = _quantize_gru_weights(model)
            bare = Path(work) / "bare.onnx"
            onnx.save(model, str(bare))
            quantize_dynamic(
                str(bare),
                str(tmp),
                op_types_to_quantize=op_types,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=signal_frontend_nodes(bare),
            )
    except Exception as error:  # the message must say which model and file failed
        raise VariantError(f"{where}: {type(error).__name__}: {error}") from error
    log.info("int8_dynamic %s -> %s (%s, %d GRU weights weight-only)", source.name, target.name, op_types, grus)
    return target


def _quantize_gru_weights(model: Any) -> int:
    """Store every top-level GRU's W and R as INT8 (symmetric, one scale per gate row) behind a
    DequantizeLinear, in place; returns how many weight tensors were quantized.

    ORT's dynamic quantizer has no GRU (it has LSTM), and the radar sequence models are GRUs. Weight-
    only INT8 quarters their weight bytes and carries the rounding error the deployed weights will
    have; ORT then runs the GRU itself in float32 (it may fold the DequantizeLinear at load time), so
    this variant is smaller, not faster, for a GRU.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    dequantize, changed = [], 0
    for node in graph.node:
        if node.op_type != "GRU":
            continue
        for index in (1, 2):  # W (dirs, 3H, input), R (dirs, 3H, H)
            name = node.input[index]
            init = initializers.get(name)
            if init is None or init.data_type != TensorProto.FLOAT:
                continue  # a computed weight (not a stored one) stays as it is
            weight = numpy_helper.to_array(init)
            scale = (np.abs(weight).max(axis=(0, 2)) / 127.0).astype(np.float32)
            scale[scale == 0] = 1.0  # an all-zero row: any scale represents it exactly
            quantized = np.clip(np.rint(weight / scale[None, :, None]), -127, 127).astype(np.int8)
            graph.initializer.extend(
                [numpy_helper.from_array(quantized, f"{name}_int8"), numpy_helper.from_array(scale, f"{name}_scale")]
            )
            dequantize.append(
                helper.make_node(
                    "DequantizeLinear",
                    [f"{name}_int8", f"{name}_scale"],
                    [f"{name}_dequantized"],
                    name=f"{name}_DequantizeLinear",
                    axis=1,
                )
            )
            node.input[index] = f"{name}_dequantized"
            consumers[name] -= 1
            if consumers[name] == 0:
                graph.initializer.remove(init)
            changed += 1
    if dequantize:
        # They read initializers only, so putting them first keeps the graph topologically sorted.
        nodes = [*dequantize, *graph.node]
        del graph.node[:]
        graph.node.extend(nodes)
    return changed


def _size_ratio(path: Path, reference: Path) -> float:
    return path.stat().st_size / max(reference.stat().st_size, 1)
