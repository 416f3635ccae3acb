"""ONNX export of a trained classifier, with static TF-'SAME' padding and a numerical check.

timm's `tf_*` models pad 'SAME' at run time (`Conv2dSame`, `MaxPool2dSame`, ...): the pad amounts are
computed from the input's H and W. Exported, that is a Shape -> Div -> Ceil -> ... subgraph feeding a
Pad node, and static INT8 quantization inserts Q/DQ pairs into that arithmetic, which corrupts the
padding (INT8 accuracy fell 8 points on EfficientNet-Lite0). For a fixed export size the pads are
constants, so `replace_conv2d_same` swaps each dynamic layer for a constant pad + the plain layer.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
    # timm.layers.padding.get_same_padding for a Python int: total pad of one spatial axis.
    return max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def _static_pad(hw: tuple[int, int], module: nn.Module) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) as timm's pad_same would compute it for an input of size hw."""
    kernel, stride = _pair(module.kernel_size), _pair(module.stride)  # type: ignore[arg-type]
    dilation = _pair(getattr(module, "dilation", 1))  # AvgPool2d has no dilation
    pad_h = _same_pad(hw[0], kernel[0], stride[0], dilation[0])
    pad_w = _same_pad(hw[1], kernel[1], stride[1], dilation[1])
    # TF puts the odd pixel on the right/bottom, exactly like pad_same.
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def _dynamic_same_types() -> tuple[tuple[type[nn.Module], ...], tuple[type[nn.Module], ...]]:
    """(layers replaced by pad + a fresh plain layer, layers kept with their run-time pad switched off)."""
    from timm.layers.conv2d_same import Conv2dSame, Conv2dSameExport
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame
    from timm.layers.std_conv import ScaledStdConv2dSame, StdConv2dSame

    replaced = (Conv2dSame, Conv2dSameExport, MaxPool2dSame, AvgPool2dSame)
    # Weight-standardized convs keep their forward (it standardizes the weight) minus the dynamic pad.
    switched = (StdConv2dSame, ScaledStdConv2dSame)
    return replaced, switched


def _trace_input_sizes(
    model: nn.Module, targets: tuple[type[nn.Module], ...], dummy: torch.Tensor
) -> dict[str, tuple[int, int]]:
    """Input (H, W) seen by every module of the target types on one forward pass of `dummy`."""
    sizes: dict[str, tuple[int, int]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, targets):

            def hook(_module: nn.Module, args: tuple[torch.Tensor, ...], name: str = name) -> None:
                sizes[name] = (int(args[0].shape[-2]), int(args[0].shape[-1]))

            handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(dummy)
    finally:
        for handle in handles:
            handle.remove()
    return sizes


def _static_replacement(
    module: nn.Module, pad: tuple[int, int, int, int], switched: tuple[type[nn.Module], ...]
) -> nn.Module:
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

    if isinstance(module, switched):
        plain = copy.deepcopy(module)
        setattr(plain, "same_pad", False)  # noqa: B010  (its forward then skips pad_same; padding is already 0)
        return nn.Sequential(OrderedDict(pad=nn.ZeroPad2d(pad), conv=plain))
    if isinstance(module, MaxPool2dSame):
        # pad_same pads max-pools with -inf so the pad never wins the max. Edge replication gives the
        # same maxima (a dense window that covers a pad cell also covers the border cell it copies,
        # since each pad < kernel) without an infinite value that would wreck a quantization range.
        pool = nn.MaxPool2d(module.kernel_size, module.stride, 0, module.dilation, module.ceil_mode)
        dense = _pair(module.dilation) == (1, 1) and not module.ceil_mode
        padding = nn.ReplicationPad2d(pad) if dense else nn.ConstantPad2d(pad, float("-inf"))
        return nn.Sequential(OrderedDict(pad=padding, pool=pool))
    if isinstance(module, AvgPool2dSame):
        avg = nn.AvgPool2d(module.kernel_size, module.stride, 0, module.ceil_mode, module.count_include_pad)
        return nn.Sequential(OrderedDict(pad=nn.ZeroPad2d(pad), pool=avg))
    assert isinstance(module, nn.Conv2d)
    conv = nn.Conv2d(
        module.in_channels,
        module.out_channels,
        module.kernel_size,  # type: ignore[arg-type]
        module.stride,  # type: ignore[arg-type]
        0,
        module.dilation,  # type: ignore[arg-type]
        module.groups,
        module.bias is not None,
        dtype=module.weight.dtype,
        device=module.weight.device,
    )
    conv.load_state_dict(module.state_dict())
    return nn.Sequential(OrderedDict(pad=nn.ZeroPad2d(pad), conv=conv))


def replace_conv2d_same(model: nn.Module, input_size: int | tuple[int, int], in_chans: int = 3) -> nn.Module:
    """A copy of `model` whose dynamic 'SAME' layers use constant pads for this input size.

    Bit-identical to `model` at `input_size` (same F.pad + F.conv2d calls, constant arguments), but only
    valid at that size. The input model is not modified. Layers are located by tracing one dummy forward.
    """
    replaced, switched = _dynamic_same_types()
    targets = replaced + switched
    result = copy.deepcopy(model)
    was_training = result.training
    result.eval()  # BatchNorm must not update running stats on the dummy pass
    height, width = _pair(input_size)
    parameter = next(result.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    dummy = torch.zeros(1, in_chans, height, width, dtype=dtype)
    sizes = _trace_input_sizes(result, targets, dummy)
    for name, module in list(result.named_modules()):
        if not isinstance(module, targets):
            continue
        if name not in sizes:
            log.warning("%s (%s) was not reached by the forward pass; left dynamic", name, type(module).__name__)
            continue
        parent_name, _, child = name.rpartition(".")
        parent = result.get_submodule(parent_name) if parent_name else result
        setattr(parent, child, _static_replacement(module, _static_pad(sizes[name], module), switched))
    return result.train(was_training)


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".onnx.tmp")
    os.close(fd)
    return Path(tmp_name)


def _export_to(model: nn.Module, dummy: torch.Tensor, target: Path, dynamic_batch: bool) -> None:
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    program = torch.onnx.export(
        model,
        (dummy,),
        dynamo=True,
        opset_version=OPSET,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=dynamic_shapes,
        optimize=True,
    )
    assert program is not None
    # external_data=False: one self-contained file, so the atomic rename moves the whole model.
    program.save(str(target), external_data=False)


def export_onnx(model: nn.Module, input_size: int, in_chans: int, path: str | Path, dynamic_batch: bool = True) -> Path:
    """Export `model` (eval mode, FP32) to ONNX at `path`, written atomically; returns the path.

    Input "input" float32 (B, in_chans, S, S), output "logits" (B, classes). B is dynamic when the
    exporter manages it; otherwise the model is exported with a fixed batch of 1 and that is logged.
    """
    target = Path(path)
    model = model.eval()
    tmp = _atomic_target(target)
    try:
        exported = False
        if dynamic_batch:
            # Batch 2, not 1: torch.export specializes size-1 dimensions to constants.
            dummy = torch.randn(2, in_chans, input_size, input_size)
            try:
                _export_to(model, dummy, tmp, dynamic_batch=True)
                exported = True
            except Exception as error:  # noqa: BLE001  (any exporter failure falls back to a fixed batch)
                log.warning("ONNX export with a dynamic batch failed (%s); exporting with a fixed batch of 1", error)
        if not exported:
            _export_to(model, torch.randn(1, in_chans, input_size, input_size), tmp, dynamic_batch=False)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def has_dynamic_batch(session: object) -> bool:
    """Whether an onnxruntime InferenceSession accepts any batch size."""
    shape = session.get_inputs()[0].shape  # type: ignore[attr-defined]
    return not isinstance(shape[0], int)


def run_batched(session: Any, feeds: dict[str, np.ndarray], batch: int = 256) -> list[np.ndarray]:
    """Every output of an ORT session over `feeds` (arrays of N rows by input name), `batch` rows per
    call, or one row at a time when the model was exported with a fixed batch (export_onnx's fallback)."""
    step = batch if has_dynamic_batch(session) else 1
    names = [i.name for i in session.get_inputs()]
    count = len(feeds[names[0]])
    chunks = [session.run(None, {n: feeds[n][s : s + step] for n in names}) for s in range(0, count, step)]
    if not chunks:  # no rows: empty outputs of the declared trailing shapes
        return [
            np.zeros((0, *(d if isinstance(d, int) else 1 for d in o.shape[1:])), np.float32)
            for o in session.get_outputs()
        ]
    return [np.concatenate([chunk[i] for chunk in chunks]) for i in range(len(chunks[0]))]


def onnx_input_info(onnx_path: str | Path) -> tuple[str, bool]:
    """(input name, whether the batch dimension is dynamic) of a model file, without a session."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph_input = model.graph.input[0]
    batch = graph_input.type.tensor_type.shape.dim[0]
    return graph_input.name, not batch.HasField("dim_value")


def verify_onnx(model: nn.Module, onnx_path: str | Path, inputs: torch.Tensor) -> float:
    """Max |logits_torch - logits_onnxruntime| over `inputs` (B, C, S, S), on the CPU provider."""
    return verify_module(model, onnx_path, [inputs.detach().float().contiguous().numpy()]).max_abs_diff


def export_module(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    path: str | Path,
    varargs: bool = False,
) -> Path:
    """Export any module to ONNX with a dynamic batch (dim 0 of every input), written atomically.

    `example` must have a batch of at least 2 (torch.export specializes size-1 dimensions).
    `varargs`: the module's forward takes `*inputs`, which torch.export sees as one tuple argument.
    """
    target = Path(path)
    batch = torch.export.Dim("batch", min=1, max=4096)
    per_input = tuple({0: batch} for _ in example)
    tmp = _atomic_target(target)
    try:
        program = torch.onnx.export(
            module.eval(),
            example,
            dynamo=True,
            opset_version=OPSET,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=(per_input,) if varargs else per_input,
            optimize=True,
        )
        assert program is not None
        program.save(str(tmp), external_data=False)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


@dataclass(frozen=True)
class Verification:
    """How closely an ONNX file reproduces its PyTorch module on real samples."""

    max_abs_diff: float  # over every output
    max_rel_diff: float  # max |diff| / max |PyTorch value|, per output, worst output
    top1_agreement: float | None  # share of samples with the same argmax of the logits output
    samples: int


def verify_module(
    module: nn.Module, path: str | Path, arrays: list[np.ndarray], logits_output: str | None = OUTPUT_NAME
) -> Verification:
    """Run `module` (PyTorch, eval) and the ONNX file (ONNX Runtime CPU) on the same inputs and compare.

    `arrays` are the ONNX inputs in graph order, batch first; the module's outputs (a tensor or a
    tuple) map to the graph outputs in order. Batches of 256 keep memory flat on long test sets.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    inputs = [i.name for i in session.get_inputs()]
    count = len(arrays[0])
    expected: list[list[np.ndarray]] = [[] for _ in names]
    module = module.eval()
    for start in range(0, count, 256):
        with torch.inference_mode():
            outputs = module(*(torch.from_numpy(np.ascontiguousarray(a[start : start + 256])) for a in arrays))
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        for index, value in enumerate(outputs):
            expected[index].append(value.float().numpy())
    got = run_batched(session, dict(zip(inputs, arrays, strict=True)))
    abs_diff, rel_diff, agreement = 0.0, 0.0, None
    for index, name in enumerate(names):
        want, have = np.concatenate(expected[index]), np.asarray(got[index], dtype=np.float32)
        diff = float(np.abs(want - have).max()) if want.size else 0.0
        abs_diff = max(abs_diff, diff)
        rel_diff = max(rel_diff, diff / max(float(np.abs(want).max()) if want.size else 0.0, 1e-12))
        if name == logits_output and want.size:
            agreement = float((want.argmax(1) == have.argmax(1)).mean())
    return Verification(abs_diff, rel_diff, agreement, count)
