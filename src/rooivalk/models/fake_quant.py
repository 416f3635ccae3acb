"""Fake quantization for quantization-aware training (`training.qat`), matching ONNX Runtime's static INT8.

What ORT's static QDQ quantization (rooivalk.export.quantize with `export.quantization.operators:
weighted`) runs in 8 bits, and so what is simulated here, for every Conv1d, Conv2d and Linear layer
(subclasses too: timm's Conv2dSame pads, then runs the same weights):
- the layer's input and its output (ORT puts a QuantizeLinear after every node it quantizes, which
  is also what lets it fuse the node into an integer kernel): uint8, one (scale, zero point) per
  tensor each, from the range [min(low, 0),
  max(high, 0)] as ORT's MinMax calibration computes it: scale = (high - low) / 255, zero point =
  round(-low / scale). During training the range is a moving average of each batch's min and max
  (the first batch sets it); in eval mode it is frozen.
- the layer's weight: int8, symmetric, one scale per output channel: scale = max |w| / 127 over the
  channel, quantized values in [-127, 127] (ORT's symmetric INT8 weights).
The rounding is torch's fake_quantize (straight-through gradients inside the range), so the model
learns weights whose quantized form keeps its accuracy. Sums, products and the RNN cells stay in
float, as the `weighted` ORT export leaves them. Where the two differ (what to expect of the export):
- attention (nn.MultiheadAttention) reads its projection weights directly, not through these layers'
  forward: ORT quantizes its QKV and output MatMuls, training does not round them;
- ORT's preprocessing folds a BatchNorm into the conv before it, so ORT rounds the conv's output after
  the BatchNorm, training before it; a linear layer on 3-D inputs is rounded by ORT before its bias;
- the export keeps its first `fp32_leading_convs` convs and a spectrogram front end's nodes in float
  (less rounding than trained for, which costs nothing), and calibrates every range again with
  `export.quantization.method` (MinMax, the default, is what the training ranges observe).

`prepare` works in place without changing what the model computes in float beyond the rounding: the
input rounding is a forward pre-hook and the weight rounding a parametrization, so the layer's own
forward (padding and all) runs unchanged. Its state dict gains `parametrizations.weight.original`
and a `qat_range` buffer (input and output ranges) per layer while prepared; `strip` removes both,
leaving the trained float weights under their usual names (the export quantizes them exactly as the
parametrization did).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

QUANTIZED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
UINT8_MAX, INT8_MAX = 255, 127
RANGE_BUFFER = "qat_range"  # per prepared layer: (2, 3) input and output ranges (low, high, batches seen)
_HOOK = "_qat_input_hook"
_ORDER = "_qat_parameter_order"


class PerChannelWeight(nn.Module):
    """weight (out, ...) -> its int8 symmetric per-output-channel fake-quantized copy (same shape)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        absmax = weight.detach().abs().flatten(1).amax(dim=1)  # (out,)
        scale = torch.where(absmax > 0, absmax / INT8_MAX, torch.ones_like(absmax)).float()
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero_point, 0, -INT8_MAX, INT8_MAX)


def activation_qparams(low: float, high: float) -> tuple[float, int]:
    """ORT's uint8 (scale, zero point) of the range [low, high]: the range is widened to hold 0."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / UINT8_MAX
    if scale <= 0:
        return 1.0, 0
    return scale, int(min(max(round(-low / scale), 0), UINT8_MAX))


def _observe_and_round(module: nn.Module, x: torch.Tensor, row: int) -> torch.Tensor:
    """Round `x` (the layer's input, row 0, or output, row 1) to uint8 at its range, updating the range
    first when training."""
    qat_range = module.get_buffer("qat_range")[row]  # (3,): low, high, batches seen (> 0 once observed)
    if module.training:
        with torch.no_grad():
            low, high = x.detach().min().float(), x.detach().max().float()
            momentum = float(getattr(module, "qat_momentum")) if bool(qat_range[2] > 0) else 1.0  # noqa: B009
            qat_range[0].lerp_(low, momentum)
            qat_range[1].lerp_(high, momentum)
            qat_range[2].add_(1.0)
    if not bool(qat_range[2] > 0):  # evaluated before any training batch: nothing observed to round to
        return x
    scale, zero_point = activation_qparams(float(qat_range[0]), float(qat_range[1]))
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, UINT8_MAX)


def _quantize_input(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return (_observe_and_round(module, args[0], 0), *args[1:])


def _quantize_output(module: nn.Module, _: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    return _observe_and_round(module, output, 1)


def quantized_layers(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if isinstance(module, QUANTIZED_LAYERS)]


def is_prepared(model: nn.Module) -> bool:
    return any(hasattr(module, _HOOK) for module in model.modules())


def prepare(model: nn.Module, momentum: float = 0.01) -> int:
    """Put fake quantization into every conv and linear layer of `model` (in place); how many layers."""
    if is_prepared(model):
        raise ValueError("the model already has fake quantization (prepare it once)")
    layers = quantized_layers(model)
    for layer in layers:
        weight = layer.get_parameter("weight")
        layer.register_buffer("qat_range", torch.zeros(2, 3, device=weight.device))  # input, output ranges
        setattr(layer, "qat_momentum", momentum)  # noqa: B010  (a plain float attribute, not a tensor)
        setattr(layer, _ORDER, list(layer._parameters))
        parametrize.register_parametrization(layer, "weight", PerChannelWeight())
        hooks = (layer.register_forward_pre_hook(_quantize_input), layer.register_forward_hook(_quantize_output))
        setattr(layer, _HOOK, hooks)
    return len(layers)


def strip(model: nn.Module) -> int:
    """Remove the fake quantization `prepare` put in (in place), keeping the trained float weights."""
    count = 0
    for module in model.modules():
        if not hasattr(module, _HOOK):
            continue
        for hook in getattr(module, _HOOK):
            hook.remove()
        delattr(module, _HOOK)
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        # torch re-registers the weight after the bias; the original order keeps state dicts as they were
        order = getattr(module, _ORDER)
        module._parameters = {name: module._parameters[name] for name in order}
        delattr(module, _ORDER)
        del module.qat_range
        del module.qat_momentum
        count += 1
    return count
