"""The FP32 graph of a variant ensemble (rooivalk.plan.variants): every member exported and checked
against PyTorch on its own, then merged into one graph of the weighted probabilities
(rooivalk.export.ensemble_onnx.merge_members), which is checked against the members' PyTorch
probabilities averaged. What is built on the graph afterwards (precision variants, temperature, bundle)
is the single model's path (rooivalk.export.array_export; an image plan's: rooivalk.export.pipeline_step).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from scipy.special import softmax
from torch import nn

from rooivalk.export.benchmark import ort_session
from rooivalk.export.ensemble_onnx import GraphMember, merge_members
from rooivalk.export.onnx_export import run_batched, verify_module
from rooivalk.export.shipping import ExportError
from rooivalk.models.artifact import VariantMemberInfo
from rooivalk.models.variant_ensemble import VariantEnsemble
from rooivalk.plan import ModelSpec, Plan


class VariantInfo(Protocol):
    """A variant ensemble's root info: an image model's ModelInfo or an rnn or mlp model's ArrayModelInfo."""

    @property
    def spec(self) -> ModelSpec: ...

    @property
    def variants(self) -> list[VariantMemberInfo] | None: ...


def describe_variants(info: VariantInfo) -> str:
    """e.g. "variant ensemble of 3 rnn models (gru-8x1, gru-8x1, gru-16x1)"."""
    members = info.variants or []
    return (
        f"variant ensemble of {len(members)} {info.spec.family} models "
        f"({', '.join(member.architecture for member in members)})"
    )


def _torch_probabilities(model: VariantEnsemble, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Each member's softmax probabilities (N, K) in PyTorch, in batches of 256."""
    count = len(next(iter(feeds.values())))
    parts: list[list[np.ndarray]] = [[] for _ in model.members]
    for start in range(0, count, 256):
        inputs = [torch.from_numpy(np.ascontiguousarray(a[start : start + 256])) for a in feeds.values()]
        with torch.inference_mode():
            for k, member in enumerate(model.members):
                parts[k].append(torch.softmax(member(*inputs).float(), dim=-1).numpy().astype(np.float64))
    return [np.concatenate(chunks) if chunks else np.zeros((0, 0)) for chunks in parts]


def export_variant_graph(
    plan: Plan,
    model: VariantEnsemble,
    info: VariantInfo,
    fp32: Path,
    scratch: Path,
    feeds: dict[str, np.ndarray],
    verify_rows: int,
    export_member: Callable[[nn.Module, Path], Any],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Write the ensemble's FP32 graph to `fp32` (`export_member` exports one member's graph; `feeds`: the
    test split's graph inputs, of which the first `verify_rows` check each member); the checks."""
    assert info.variants is not None
    limit = plan.export.max_abs_diff
    head = {name: array[:verify_rows] for name, array in feeds.items()}
    members: list[GraphMember] = []
    checks: dict[str, Any] = {}
    for k, member in enumerate(model.members):
        path = scratch / f"member_{k}.onnx"
        export_member(member, path)
        check = verify_module(member, path, list(head.values()))
        if not check.max_abs_diff <= limit:  # `not <=` also catches NaN
            raise ExportError(
                f"variant member {k}: ONNX export does not match PyTorch: max |logit difference| "
                f"{check.max_abs_diff:.3g} > export.max_abs_diff {limit:.3g}"
            )
        checks[f"member_{k}"] = check.__dict__
        members.append(GraphMember(path, f"member_{k}/"))
    weights = [member.weight for member in info.variants]
    merge_members(members, weights, fp32)
    want = sum(w * p for w, p in zip(weights, _torch_probabilities(model, feeds), strict=True))  # (N, K)
    have = softmax(run_batched(ort_session(fp32), feeds)[0], axis=1)
    rows = len(have)
    diff = float(np.abs(have - np.asarray(want)).max()) if rows else 0.0
    if not diff <= limit:
        fp32.unlink()
        raise ExportError(
            f"the variant ensemble graph does not match its members: max |probability difference| {diff:.3g} > "
            f"export.max_abs_diff {limit:.3g}"
        )
    agreement = float((have.argmax(1) == np.asarray(want).argmax(1)).mean()) if rows else 1.0
    say(f"variant ensemble ONNX verified ({len(members)} members): max |probability diff| {diff:.2e}")
    return {**checks, "ensemble": {"max_abs_diff": diff, "top1_agreement": agreement, "weights": weights}}
