"""Which training samples a stage's epochs cover, in which order, on which rank.

An epoch's order is a pure function of (seed, epoch) and a stage's subset of (seed, stage index),
so a resumed run re-draws both with no saved state. Distributed runs shard the order with torch's
DistributedSampler; every epoch takes full batches only (a last batch of one sample breaks
BatchNorm in training mode).

`training.batch_sampling` shapes the order by class: `stratified` spreads each class evenly over the
epoch, so every batch holds the classes in their training proportions; `balanced` draws the epoch's
samples with replacement, each class equally likely, so rare classes are seen as often as common ones
(an epoch keeps its number of samples). Distributed runs shard these orders the way DistributedSampler
shards its own: the same global order on every rank, cut to a multiple of the ranks, every rank-th.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from rooivalk.plan import TrainingSpec
from rooivalk.training.engine.distributed import DistContext
from rooivalk.training.engine.stages import ResolvedStage
from rooivalk.training.engine.state import epoch_generator


def class_order(labels: np.ndarray, mode: str, generator: torch.Generator) -> torch.Tensor:
    """An epoch's order of positions 0..N-1 of `labels` (N,) shaped by class (see module doc)."""
    if mode == "balanced":
        counts = np.bincount(labels)
        weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.float64)
        return torch.multinomial(weights, len(labels), replacement=True, generator=generator)
    # stratified: class c's samples in a random order take keys (rank + jitter) / n_c in [0, 1), so any
    # stretch of the sorted order holds each class in proportion to its count.
    keys = torch.empty(len(labels), dtype=torch.float64)
    for label in np.unique(labels):
        rows = torch.as_tensor(np.flatnonzero(labels == label))
        order = torch.randperm(len(rows), generator=generator)
        jitter = torch.rand(len(rows), generator=generator, dtype=torch.float64)
        keys[rows[order]] = (torch.arange(len(rows), dtype=torch.float64) + jitter) / len(rows)
    return torch.argsort(keys, stable=True)


class StageSampling:
    def __init__(self, labels: np.ndarray, stages: list[ResolvedStage], spec: TrainingSpec, dist: DistContext) -> None:
        self.labels = labels  # (N,) class of each training sample
        self.count = len(labels)  # training samples
        self.stages = stages
        self.spec = spec
        self.dist = dist
        self._subsets: dict[int, np.ndarray | None] = {}  # stage index -> its sorted subset, None: all

    @property
    def rank_batch_size(self) -> int:
        """Per-rank batch: the plan's batch_size is the global batch, split over the ranks."""
        return max(self.spec.batch_size // self.dist.world_size, 1)

    def subset(self, index: int) -> np.ndarray | None:
        """Stage `index`'s fixed training subset (sorted sample indices), or None: all samples."""
        if index not in self._subsets:  # drawn once per stage: batches_per_epoch() asks often
            stage, subset = self.stages[index], None
            if stage.max_samples is not None and stage.max_samples < self.count:
                generator = epoch_generator(self.spec.seed, -1 - index)
                subset = torch.randperm(self.count, generator=generator)[: stage.max_samples].sort().values.numpy()
            self._subsets[index] = subset
        return self._subsets[index]

    def rows(self, index: int, positions: np.ndarray) -> np.ndarray:
        """Training-split rows of positions in stage `index`'s samples."""
        subset = self.subset(index)
        return positions if subset is None else subset[positions]

    def samples(self, index: int) -> int:
        subset = self.subset(index)
        return self.count if subset is None else len(subset)

    def batches_per_epoch(self, index: int) -> int:
        samples = self.samples(index)
        per_rank = samples // self.dist.world_size if self.dist.enabled else samples
        count = max(per_rank // self.rank_batch_size, 1)
        return min(count, self.spec.max_train_batches) if self.spec.max_train_batches else count

    def epoch_order(self, index: int, epoch: int) -> torch.Tensor:
        """This rank's order of stage `index`'s sample positions in global epoch `epoch`."""
        count = self.samples(index)
        if self.spec.batch_sampling != "random":
            subset = self.subset(index)
            labels = self.labels if subset is None else self.labels[subset]
            order = class_order(labels, self.spec.batch_sampling, epoch_generator(self.spec.seed, epoch))
            if not self.dist.enabled:
                return order
            total = count // self.dist.world_size * self.dist.world_size
            return order[:total][self.dist.rank :: self.dist.world_size]
        if not self.dist.enabled:
            return torch.randperm(count, generator=epoch_generator(self.spec.seed, epoch))
        sampler: DistributedSampler[int] = DistributedSampler(
            range(count),  # type: ignore[arg-type]  # only len() is used
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            shuffle=True,
            seed=self.spec.seed,
            drop_last=True,
        )
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.int64)
