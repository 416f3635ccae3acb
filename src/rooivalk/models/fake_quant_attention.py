"""QAT's fake quantization of nn.MultiheadAttention: the projections ONNX Runtime's INT8 graph rounds.

Attention reads in_proj_weight and out_proj.weight itself (F.multi_head_attention_forward), so the
layer hooks never see its projections. The export makes of them (self-attention, q is k is v):
  MatMul(q, in_proj_weight^T) + Add(in_proj_bias)   one MatMul for Q, K and V: (L, N, E) -> (L, N, 3E)
  Gemm(attention (L*N, E), out_proj.weight, out_proj.bias)
and ORT's weighted static INT8 rounds both weights per output channel (the MatMul's weight along its
3E output axis: one scale per row of in_proj_weight, as a split into Q, K, V would have too), each
node's input, the MatMul's output before the bias (3-D) and the Gemm's output after it (2-D). The
score and value MatMuls (two activations) stay in float. Cross-attention (q is not k) exports one
MatMul per distinct input (q; k = v or k and v), each rounded on its own range.

How: while the attention's forward runs, a TorchFunctionMode catches its call of
F.multi_head_attention_forward, computes the in-projections here with their rounding, and hands the
function the projected q, k, v with identity projection weights (x @ I is x exactly); the function's
output, before any output projection, is then rounded, projected by out_proj.weight and rounded again.
The mode also turns torch's fused fast path off (it would bypass all of this). Ranges: the attention's
`qat_range` rows 2i, 2i + 1 are the i-th in-projection's input and output; out_proj's own `qat_range`
holds the Gemm's. Not simulated (the function runs as is): add_bias_kv, add_zero_attn and unbatched
inputs, whose weights are still rounded; kdim/vdim != embed_dim (separate projection weights), whose
in-projections are not rounded at all (only out_proj's weight, as any Linear).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from rooivalk.models.fake_quant_ops import rounded_linear

IN_PROJECTION_ROWS = 6  # up to three in-projections (q, k, v distinct), input and output each
_SIGNATURE = inspect.signature(F.multi_head_attention_forward)
_MODE = "_qat_attention_mode"


class _AttentionRounding(TorchFunctionMode):
    """Active during one attention forward; rewrites its F.multi_head_attention_forward call."""

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        self.attention = attention

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is not F.multi_head_attention_forward:
            return func(*args, **kwargs)
        # the mode is off inside this handler: the calls below run plainly
        call = _SIGNATURE.bind(*args, **kwargs)
        call.apply_defaults()
        return _rounded_attention(self.attention, dict(call.arguments))


def _projections(
    attention: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, weight: torch.Tensor, bias: Any
) -> list[torch.Tensor]:
    """The rounded in-projections of q, k, v (each (L, N, E)), as the export splits them into MatMuls."""
    embed = q.shape[-1]
    if q is k and k is v:
        groups = [(q, slice(0, 3 * embed))]  # one MatMul, (L, N, 3E)
    elif k is v:
        groups = [(q, slice(0, embed)), (k, slice(embed, 3 * embed))]
    else:
        groups = [(q, slice(0, embed)), (k, slice(embed, 2 * embed)), (v, slice(2 * embed, 3 * embed))]
    projections: list[torch.Tensor] = []
    for index, (x, rows) in enumerate(groups):
        part_bias = None if bias is None else bias[rows]
        output = rounded_linear(attention, x, weight[rows], part_bias, (2 * index, 2 * index + 1))
        projections.extend(torch.split(output, embed, dim=-1))  # (L, N, E) each; q's and k's L may differ
    return projections  # q, k, v


def _rounded_attention(attention: nn.Module, arguments: dict[str, Any]) -> Any:
    query, key, value = arguments["query"], arguments["key"], arguments["value"]
    unsupported = (
        arguments["use_separate_proj_weight"]
        or arguments["bias_k"] is not None
        or arguments["add_zero_attn"]
        or query.dim() != 3
    )
    if unsupported:
        return F.multi_head_attention_forward(**arguments)
    embed = query.shape[-1]
    eye = torch.eye(embed, dtype=query.dtype, device=query.device)
    q, k, v = _projections(attention, query, key, value, arguments["in_proj_weight"], arguments["in_proj_bias"])
    out_weight, out_bias = arguments["out_proj_weight"], arguments["out_proj_bias"]
    arguments.update(
        query=q,
        key=k,
        value=v,
        in_proj_weight=None,
        in_proj_bias=None,
        use_separate_proj_weight=True,
        q_proj_weight=eye,
        k_proj_weight=eye,
        v_proj_weight=eye,
        out_proj_weight=eye,
        out_proj_bias=None,
    )
    heads, weights = F.multi_head_attention_forward(**arguments)  # heads: (L, N, E), not yet projected
    length, batch, _ = heads.shape
    # the export's out_proj: Gemm on (L * N, E), rounded at out_proj's ranges (its own hooks never run)
    out_proj = attention.get_submodule("out_proj")
    projected = rounded_linear(out_proj, heads.reshape(length * batch, embed), out_weight, out_bias, (0, 1))
    return projected.view(length, batch, embed), weights


def _enter(attention: nn.Module, _: tuple[Any, ...], __: dict[str, Any]) -> None:
    assert isinstance(attention, nn.MultiheadAttention)
    mode = _AttentionRounding(attention)
    mode.__enter__()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
    setattr(attention, _MODE, mode)


def _exit(attention: nn.Module, _: Any, __: Any, ___: Any) -> None:
    mode = getattr(attention, _MODE, None)
    if mode is not None:
        delattr(attention, _MODE)
        mode.__exit__(None, None, None)


def add_hooks(attention: nn.MultiheadAttention) -> list[RemovableHandle]:
    """The mode on for the attention's forward (and off again, even if it raises)."""
    return [
        attention.register_forward_pre_hook(_enter, with_kwargs=True),
        attention.register_forward_hook(_exit, with_kwargs=True, always_call=True),
    ]
