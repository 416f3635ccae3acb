"""Classification losses from the plan: cross-entropy or softmax focal loss, optional class weights.

Both accept hard labels (B,) int64 or soft targets (B, C) (Mixup/CutMix); label smoothing is applied
here, never by the mixing step, so a mixed batch is smoothed exactly once.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rooivalk.plan import LossSpec


def balanced_class_weights(class_counts: np.ndarray) -> torch.Tensor:
    """n_samples / (n_classes * count) per class, sklearn's "balanced": a uniform split gives all ones."""
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"class_counts must be a non-empty 1-D array, got shape {counts.shape}")
    empty = np.flatnonzero(counts <= 0).tolist()
    if empty:
        raise ValueError(f"balanced class weights need every class in the training split; classes {empty} have none")
    return torch.tensor(counts.sum() / (counts.size * counts), dtype=torch.float32)


class ClassificationLoss(nn.Module):
    """forward(logits (B, C), target (B,) int64 or (B, C) float) -> scalar mean loss.

    focal (Lin et al., 2017, softmax form, generalized to soft targets):
        loss_i = alpha * sum_c w_c * t_ic * (1 - p_ic)^gamma * (-log p_ic)
    with t the (smoothed) target distribution and w the class weights (ones when none). gamma = 0 and
    alpha unset give torch's soft-target cross-entropy. The softmax form has only target terms, so
    `alpha` (the paper's weight of the positive term) scales the whole loss; it is there for plans
    ported from sigmoid focal loss. The focal mean is over the batch, like torch's soft-target
    cross-entropy (torch's hard-label weighted mean divides by the summed target weights instead).
    """

    weight: torch.Tensor | None

    def __init__(
        self,
        name: str = "cross_entropy",
        label_smoothing: float = 0.0,
        gamma: float = 2.0,
        alpha: float | None = None,
        weight: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if name not in ("cross_entropy", "focal"):
            raise ValueError(f"unknown loss {name!r}")
        self.name = name
        self.label_smoothing = label_smoothing
        self.gamma = gamma
        self.alpha = alpha
        # A buffer, so .to(device) moves the weights with the model's loss.
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.name == "cross_entropy":
            return F.cross_entropy(logits, target, weight=self.weight, label_smoothing=self.label_smoothing)
        return self._focal(logits, target)

    def _focal(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        # float32 even under bf16/fp16 autocast: (1 - p)^gamma underflows in half precision.
        log_p = F.log_softmax(logits.float(), dim=1)  # (B, C)
        probs = target.float() if target.is_floating_point() else F.one_hot(target, num_classes).float()  # (B, C)
        probs = probs * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        terms = probs * (1.0 - log_p.exp()).pow(self.gamma) * -log_p  # (B, C)
        if self.weight is not None:
            terms = terms * self.weight.to(terms.dtype)
        loss = terms.sum(dim=1).mean()
        return loss * self.alpha if self.alpha is not None else loss


def build_loss(spec: LossSpec, class_counts: np.ndarray | None = None) -> ClassificationLoss:
    """The plan's loss; `class_counts` (per class, training split) is needed for balanced weights."""
    weight = None
    if spec.class_weights == "balanced":
        if class_counts is None:
            raise ValueError("class_weights 'balanced' needs the training split's class counts")
        weight = balanced_class_weights(class_counts)
    return ClassificationLoss(spec.name, spec.label_smoothing, spec.focal_gamma, spec.focal_alpha, weight)
