"""A variant ensemble as one network: its members' class probabilities, weighted and averaged.

forward(*inputs) -> log(max(sum_k w_k softmax(member_k(*inputs)), FLOOR)), (N, K). The log makes the
result read as logits: softmax of it gives the ensemble's probabilities back (they sum to 1), so
evaluation, registration and the export's PyTorch baseline treat the ensemble like any classifier,
and rooivalk.export.ensemble_onnx builds the same function as one ONNX graph (the same floor).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

FLOOR = 1e-12  # log of a probability of exactly 0 would be -inf


class VariantEnsemble(nn.Module):
    weights: torch.Tensor  # (M,) float32, normalized: a buffer, so it moves and saves with the members

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float]) -> None:
        super().__init__()
        if len(members) != len(weights) or len(members) < 1:
            raise ValueError(f"{len(members)} members and {len(weights)} weights: give one weight per member")
        self.members = nn.ModuleList(members)
        total = float(sum(weights))
        self.register_buffer("weights", torch.tensor([float(w) / total for w in weights], dtype=torch.float32))

    def member_probabilities(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """Each member's softmax probabilities (N, K), in member order."""
        return [torch.softmax(member(*inputs).float(), dim=-1) for member in self.members]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        probabilities = self.member_probabilities(*inputs)
        mixed = sum(w * p for w, p in zip(self.weights, probabilities, strict=True))  # (N, K)
        assert isinstance(mixed, torch.Tensor)
        return torch.log(torch.clamp(mixed, min=FLOOR))
