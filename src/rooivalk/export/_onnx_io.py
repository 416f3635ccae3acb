"""File plumbing shared by the precision variants (rooivalk.export.variants, rooivalk.export.quantize).

Kept apart so that both modules can raise the same error and write the same way without importing
each other.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class VariantError(ValueError):
    """A precision variant that cannot be built; the message names the precision, the file and the cause."""


@dataclass(frozen=True)
class GraphInput:
    name: str
    dtype: np.dtype[Any]
    dynamic_batch: bool  # dimension 0 is symbolic (or absent) rather than a fixed number


@contextmanager
def atomic_output(target: Path) -> Iterator[Path]:
    """A temporary path in `target`'s folder that replaces `target` only if the block succeeds, so
    no reader ever sees a half-written model and a failed build leaves nothing behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".onnx.tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp creates 0600; a bundle is read by other users (serving containers, CI), so the
        # published file gets the usual 0644.
        tmp.chmod(0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def load_bare(path: Path) -> Any:
    """The model at `path` without its intermediate shape annotations (graph.value_info).

    ORT's quantizers and the FP16 converter re-run ONNX shape inference, which fails when an
    existing annotation disagrees with what it infers. The torch exporter's annotations can do
    that although ORT runs the graph fine (measured: the CREPE framing, 514 vs 256; ORT's own
    Gemm -> MatMul rewrite in quantize_dynamic leaves a stale one too), so they are dropped and
    inferred afresh. Graph inputs and outputs keep their declared types and shapes.
    """
    import onnx

    model = onnx.load(str(path))
    del model.graph.value_info[:]
    return model


def graph_inputs(model: Any) -> list[GraphInput]:
    """The inputs a caller feeds (initializers that older exporters list as inputs are left out)."""
    from onnx import helper

    initializers = {init.name for init in model.graph.initializer}
    found = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = tensor.shape.dim
        dynamic = not dims or not dims[0].HasField("dim_value")
        found.append(GraphInput(value.name, np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)), dynamic))
    return found
