"""ONNX export of a recurrent sequence classifier (rooivalk.models.rnn), dynamic in batch and length.

Graph: "sequences" float32 (batch, steps, F) and "lengths" int64 (batch,) -> "logits" (batch, K).
`onnx_export.export_module` makes only the batch dynamic, so the call is made here with the time axis
as a second dynamic dimension; the file is written atomically like every other export.
`onnx_export.verify_module(model, path, [sequences, lengths])` checks a file against PyTorch, and
`variants.quantize_dynamic_int8` makes its INT8 variant (ORT's dynamic LSTM; GRU weights weight-only).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rooivalk.export._onnx_io import atomic_output
from rooivalk.export.onnx_export import OPSET, OUTPUT_NAME
from rooivalk.models.array_inference import LENGTHS, SEQUENCES

_MAX = 1 << 16


def _clear_rnn_dispatch_caches() -> None:
    """Forget which kernel aten.gru / aten.lstm resolved to. For dynamic shapes torch.onnx swaps in a
    while_loop decomposition of both ops (their py_kernels) for the export, but an op's dispatch cache
    keeps the kernel an earlier call resolved: without this, every rnn export after the first in a
    process unrolls the recurrence and fixes the time axis to the example's length (torch 2.14). Cleared
    after the export too, so that eager calls do not keep the export's kernel."""
    for op in (torch.ops.aten.gru.input, torch.ops.aten.lstm.input):
        cache = getattr(op, "_dispatch_cache", None)
        if cache is not None:
            cache.clear()


def export_rnn_onnx(model: nn.Module, path: str | Path, num_features: int) -> Path:
    """Export `model` (put in eval mode; forward(sequences, lengths)) to ONNX at `path`; returns the path."""
    target = Path(path)
    batch = torch.export.Dim("batch", min=1, max=_MAX)
    steps = torch.export.Dim("steps", min=1, max=_MAX)
    # torch.export specializes dimensions of size 0 or 1 to constants: the example has >= 2 of each.
    sequences = torch.randn(3, 5, num_features)
    lengths = torch.tensor([5, 4, 2], dtype=torch.long)  # ragged, as the data is
    _clear_rnn_dispatch_caches()
    try:
        with atomic_output(target) as tmp:
            program = torch.onnx.export(
                model.eval(),
                (sequences, lengths),
                dynamo=True,
                opset_version=OPSET,
                input_names=[SEQUENCES, LENGTHS],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch, 1: steps}, {0: batch}),
                optimize=True,
            )
            assert program is not None
            # external_data=False: one self-contained file, so the atomic rename moves the whole model.
            program.save(str(tmp), external_data=False)
    finally:
        _clear_rnn_dispatch_caches()
    return target
