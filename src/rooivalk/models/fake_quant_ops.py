"""The rounding operations of QAT's fake quantization (models.fake_quant), shared by its layer kinds.

ONNX Runtime's static QDQ INT8, as rooivalk.export.quantize builds it: activations uint8 with one
(scale, zero point) per tensor from MinMax ranges; weights int8, symmetric, one scale per output
channel. Here are the matching torch fake_quantize calls (straight-through gradients inside the range).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

UINT8_MAX, INT8_MAX = 255, 127
RANGE_BUFFER = "qat_range"  # per prepared module: (rows, 3) ranges (low, high, batches seen)


def per_channel_int8(weight: torch.Tensor) -> torch.Tensor:
    """weight (out, ...) -> its int8 symmetric per-output-channel fake-quantized copy (same shape)."""
    absmax = weight.detach().abs().flatten(1).amax(dim=1)  # (out,)
    scale = torch.where(absmax > 0, absmax / INT8_MAX, torch.ones_like(absmax)).float()
    zero_point = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero_point, 0, -INT8_MAX, INT8_MAX)


class PerChannelWeight(nn.Module):
    """Parametrization: the weight as ORT's per-channel int8 weights hold it."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return per_channel_int8(weight)


def activation_qparams(low: float, high: float) -> tuple[float, int]:
    """ORT's uint8 (scale, zero point) of the range [low, high]: the range is widened to hold 0."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / UINT8_MAX
    if scale <= 0:
        return 1.0, 0
    return scale, int(min(max(round(-low / scale), 0), UINT8_MAX))


def add_ranges(module: nn.Module, rows: int, momentum: float) -> None:
    """Give `module` its range buffer (zeros: nothing observed yet) and the moving average's momentum."""
    device = next(module.parameters()).device
    module.register_buffer(RANGE_BUFFER, torch.zeros(rows, 3, device=device))
    setattr(module, "qat_momentum", momentum)  # noqa: B010  (a plain float attribute, not a tensor)


def remove_ranges(module: nn.Module) -> None:
    delattr(module, RANGE_BUFFER)
    delattr(module, "qat_momentum")


def observe_and_round(module: nn.Module, x: torch.Tensor, row: int) -> torch.Tensor:
    """Round `x` to uint8 at row `row` of `module`'s ranges, updating that range first when training."""
    qat_range = module.get_buffer(RANGE_BUFFER)[row]  # (3,): low, high, batches seen (> 0 once observed)
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


def round_linear_output(module: nn.Module, output: torch.Tensor, bias: torch.Tensor | None, row: int) -> torch.Tensor:
    """A linear map's output (bias included) rounded where ORT rounds it. On 2-D inputs the export
    makes one Gemm, whose output (bias included) ORT rounds; on more dims it makes MatMul + Add, and ORT
    rounds the MatMul's output, before the bias."""
    if output.dim() <= 2 or bias is None:
        return observe_and_round(module, output, row)
    return observe_and_round(module, output - bias, row) + bias


def rounded_linear(
    module: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, rows: tuple[int, int]
) -> torch.Tensor:
    """F.linear with ORT's rounding of its input (row rows[0]) and output (rows[1]); `weight` is rounded
    already. Computed without the bias first where ORT rounds before it (no subtraction error)."""
    x = observe_and_round(module, x, rows[0])
    if x.dim() <= 2 or bias is None:
        return observe_and_round(module, F.linear(x, weight, bias), rows[1])
    return observe_and_round(module, F.linear(x, weight), rows[1]) + bias
