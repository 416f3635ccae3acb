"""BatchNorm folding for QAT: a conv (or linear) layer whose output goes straight into a BatchNorm.

The ONNX export (eval mode) folds such a BatchNorm into the layer before it: the graph holds one
Conv/Gemm with weight w * s and bias (b - mean) * s + beta, s = gamma / sqrt(running_var + eps) per
output channel, so ONNX Runtime rounds that folded weight (int8, per channel) and the BatchNorm's
output (the folded node's), never the layer's own output. Training rounds the BatchNorm's output
instead of the layer's. The weight needs nothing more: with one symmetric scale per output channel,
max |w s| / 127 = |s| max |w| / 127, so round(w s) = round(w) s channel by channel, and the plain
per-channel rounding of w is the folded weight's rounding (folding first, as torch.ao's fused ConvBn
QAT modules do, matters for one scale per tensor, not per channel). In
eval mode the layer, then the BatchNorm with its running statistics, compute exactly the folded node;
in training the BatchNorm normalizes with the batch's statistics, as it would without QAT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

BatchNorm = nn.modules.batchnorm._BatchNorm


def _foldable(layer: nn.Module, bn: nn.Module) -> bool:
    return (
        isinstance(bn, BatchNorm)
        and bn.track_running_stats
        and bn.running_var is not None
        and bn.num_features == layer.get_parameter("weight").shape[0]
    )


def batchnorm_pairs(
    model: nn.Module, layers: Sequence[nn.Module], example: Callable[[], Any] | None
) -> list[tuple[nn.Module, BatchNorm]]:
    """(layer, BatchNorm) for each BatchNorm whose input is exactly a layer's output.

    With `example` (runs the model on a batch), found on one eval-mode forward pass: the BatchNorm's
    input tensor is the very tensor a layer returned (what the export then sees as Conv -> BatchNorm).
    Without it, by order: a layer and the BatchNorm right after it in an nn.Sequential.
    """
    if example is None:
        return _sequential_pairs(model, layers)
    produced: dict[int, tuple[torch.Tensor, nn.Module]] = {}  # id(output) -> (output, layer); kept alive
    pairs: dict[int, tuple[nn.Module, BatchNorm]] = {}  # by id(BatchNorm): one run twice is one pair

    def record(layer: nn.Module, _: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            produced[id(output)] = (output, layer)

    def match(bn: nn.Module, args: tuple[Any, ...]) -> None:
        output, layer = produced.get(id(args[0]), (None, None)) if args else (None, None)
        # a linear layer folds only as Gemm (2-D); on more dims the BatchNorm would need a transpose
        flat = not isinstance(layer, nn.Linear) or args[0].dim() == 2
        if layer is not None and output is args[0] and flat and _foldable(layer, bn):
            pairs[id(bn)] = (layer, bn)  # type: ignore[assignment]  # _foldable checked the type

    handles = [module.register_forward_hook(record) for module in layers] + [
        module.register_forward_pre_hook(match) for module in model.modules() if isinstance(module, BatchNorm)
    ]
    _run_in_eval(model, example, handles)
    return list(pairs.values())


def _run_in_eval(model: nn.Module, example: Callable[[], Any], handles: list[RemovableHandle]) -> None:
    """`example()` in eval mode without gradients (running statistics must not move), then the hooks
    removed and every module's mode as it was."""
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            example()
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training


def _sequential_pairs(model: nn.Module, layers: Sequence[nn.Module]) -> list[tuple[nn.Module, BatchNorm]]:
    candidates = {id(layer) for layer in layers}
    pairs = []
    for container in model.modules():
        if not isinstance(container, nn.Sequential):
            continue
        children = list(container)
        for layer, bn in zip(children, children[1:], strict=False):
            if id(layer) in candidates and _foldable(layer, bn):
                pairs.append((layer, bn))
    return pairs  # type: ignore[return-value]  # _foldable checked the type


def output_site(bn: BatchNorm) -> tuple[nn.Module, bool]:
    """Where the BatchNorm's own output can be rounded: (module, True) for its forward output, or
    (module, False) for that module's input. timm's BatchNormAct2d runs its dropout and activation
    inside its forward; its normalized output is their input."""
    for name in ("drop", "act"):
        child = getattr(bn, name, None)
        if isinstance(child, nn.Module):
            return child, False
    return bn, True
