"""Fake quantization for quantization-aware training (`training.qat`), matching ONNX Runtime's static INT8.

What ORT's static QDQ quantization (rooivalk.export.quantize with `export.quantization.operators:
weighted`) runs in 8 bits, and so what is simulated here (the roundings: models.fake_quant_ops), for
every Conv1d, Conv2d and Linear layer (subclasses too: timm's Conv2dSame pads, then runs the same
weights) and every nn.MultiheadAttention:
- the layer's input and its output (ORT puts a QuantizeLinear after every node it quantizes, which
  is also what lets it fuse the node into an integer kernel): uint8, one (scale, zero point) per
  tensor each, from the range [min(low, 0), max(high, 0)] as ORT's MinMax calibration computes it:
  scale = (high - low) / 255, zero point = round(-low / scale). During training the range is a moving
  average of each batch's min and max (the first batch sets it); in eval mode it is frozen. A linear
  layer on inputs of more than 2 dims exports as MatMul + Add: its output is rounded before the bias.
- the layer's weight: int8, symmetric, one scale per output channel: scale = max |w| / 127 over the
  channel, quantized values in [-127, 127] (ORT's symmetric INT8 weights).
- a layer whose output goes straight into a BatchNorm: the export folds the BatchNorm into it, so the
  BatchNorm's output is rounded instead of the layer's (the folded weight's per-channel rounding is the
  layer weight's, scaled: models.fake_quant_folding).
- attention: its QKV MatMul and output Gemm, weights, inputs and outputs (models.fake_quant_attention).
The rounding is torch's fake_quantize (straight-through gradients inside the range), so the model
learns weights whose quantized form keeps its accuracy. Sums, products, attention's score and value
MatMuls and the RNN cells stay in float, as the `weighted` ORT export leaves them. Where the two still
differ (what to expect of the export):
- the export keeps its first `fp32_leading_convs` convs and a spectrogram front end's nodes in float
  (less rounding than trained for, which costs nothing), and calibrates every range again with
  `export.quantization.method` (MinMax, the default, is what the training ranges observe) on the float
  graph with BatchNorms in eval mode (training observes them on its own batches, BatchNorm in train mode);
- a tensor both one weighted node's output and another's input has one range in ORT, two in training
  (each observes the same values, so they agree up to the first one's rounding);
- a folded pair is found by tensor identity on the `example` batch (else by order in nn.Sequential):
  a layer whose output also feeds something other than its BatchNorm is treated as folded too, and the
  export folds it only where its optimizer does; attention with add_bias_kv, add_zero_attn or unbatched
  inputs rounds only its weights, and with separate key/value dims (no in_proj_weight) only out_proj's.

`prepare` works in place without changing what the model computes in float beyond the rounding: the
input rounding is a forward pre-hook and the weight rounding a parametrization, so the layer's own
forward (padding and all) runs unchanged. Its state dict gains `parametrizations.weight.original`
(`parametrizations.in_proj_weight.original` for attention) and a `qat_range` buffer (input and output
ranges; attention's in-projections) per layer while prepared; `strip` removes both, leaving the trained
float weights under their usual names (the export quantizes them, folded where it folds, exactly as the
parametrization did).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle

from rooivalk.models import fake_quant_attention, fake_quant_folding
from rooivalk.models.fake_quant_ops import (
    INT8_MAX,
    RANGE_BUFFER,
    UINT8_MAX,
    PerChannelWeight,
    activation_qparams,
    add_ranges,
    observe_and_round,
    remove_ranges,
    round_linear_output,
)

__all__ = ["INT8_MAX", "RANGE_BUFFER", "UINT8_MAX", "PerChannelWeight", "activation_qparams"]
QUANTIZED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
_HOOK = "_qat_input_hook"  # the removable hooks of a prepared module (its own and its BatchNorm's)
_ORDER = "_qat_parameter_order"


def _quantize_input(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return (observe_and_round(module, args[0], 0), *args[1:])


def _quantize_output(module: nn.Module, _: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    bias = module.bias if isinstance(module, nn.Linear) else None  # a conv's bias is inside its node
    return round_linear_output(module, output, bias, 1)


class _AfterBatchNorm:
    """Hook rounding a folded pair's output, the BatchNorm's, at the layer's output range (row 1)."""

    def __init__(self, layer: nn.Module, on_output: bool) -> None:
        self.layer, self.on_output = layer, on_output

    def __call__(self, _: nn.Module, args: tuple[Any, ...], output: Any = None) -> Any:
        if self.on_output:
            return observe_and_round(self.layer, output, 1)
        return (observe_and_round(self.layer, args[0], 1), *args[1:])


def quantized_layers(model: nn.Module) -> list[nn.Module]:
    """Every module prepare rounds: conv and linear layers (attention's out_proj too) and attention."""
    return [module for module in model.modules() if isinstance(module, (*QUANTIZED_LAYERS, nn.MultiheadAttention))]


def is_prepared(model: nn.Module) -> bool:
    return any(hasattr(module, _HOOK) for module in model.modules())


def _prepare_layer(layer: nn.Module, momentum: float, bn: nn.Module | None) -> list[RemovableHandle]:
    add_ranges(layer, 2, momentum)  # input, output
    parametrize.register_parametrization(layer, "weight", PerChannelWeight())  # folded or not (fake_quant_folding)
    hooks = [layer.register_forward_pre_hook(_quantize_input)]
    if bn is None:
        return [*hooks, layer.register_forward_hook(_quantize_output)]
    site, on_output = fake_quant_folding.output_site(bn)  # type: ignore[arg-type]
    after = _AfterBatchNorm(layer, on_output)
    return [*hooks, site.register_forward_hook(after) if on_output else site.register_forward_pre_hook(after)]


def prepare(model: nn.Module, momentum: float = 0.01, example: Callable[[], Any] | None = None) -> int:
    """Put fake quantization into every conv, linear and attention layer of `model` (in place); how many.

    `example` runs the model on one batch (any output): it finds the layers whose output goes straight
    into a BatchNorm (fake_quant_folding); without it, only such pairs in an nn.Sequential are found.
    """
    if is_prepared(model):
        raise ValueError("the model already has fake quantization (prepare it once)")
    modules = quantized_layers(model)
    layers = [module for module in modules if isinstance(module, QUANTIZED_LAYERS)]
    folded = {id(layer): bn for layer, bn in fake_quant_folding.batchnorm_pairs(model, layers, example)}
    for module in modules:
        setattr(module, _ORDER, list(module._parameters))
        if isinstance(module, nn.MultiheadAttention):
            if module.in_proj_weight is None:  # kdim/vdim differ: separate weights, not simulated
                hooks = []
            else:
                add_ranges(module, fake_quant_attention.IN_PROJECTION_ROWS, momentum)
                parametrize.register_parametrization(module, "in_proj_weight", PerChannelWeight())
                hooks = fake_quant_attention.add_hooks(module)
        else:
            hooks = _prepare_layer(module, momentum, folded.get(id(module)))
        setattr(module, _HOOK, hooks)
    return len(modules)


def strip(model: nn.Module) -> int:
    """Remove the fake quantization `prepare` put in (in place), keeping the trained float weights."""
    count = 0
    for module in model.modules():
        if not hasattr(module, _HOOK):
            continue
        for hook in getattr(module, _HOOK):
            hook.remove()
        delattr(module, _HOOK)
        name = "in_proj_weight" if isinstance(module, nn.MultiheadAttention) else "weight"
        if parametrize.is_parametrized(module, name):
            parametrize.remove_parametrizations(module, name, leave_parametrized=False)
        # torch re-registers the weight after the bias; the original order keeps state dicts as they were
        order = getattr(module, _ORDER)
        module._parameters = {name: module._parameters[name] for name in order}
        delattr(module, _ORDER)
        if hasattr(module, RANGE_BUFFER):
            remove_ranges(module)
        count += 1
    return count
