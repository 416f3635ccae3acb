"""Where a run is, and the random state that makes a resumed run replay the same batches.

Everything here round-trips through torch.save / torch.load(weights_only=True): plain Python
types and tensors only (numpy's RNG state is stored as a list).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class RunPosition:
    stage_index: int = 0
    epoch_in_stage: int = 0  # epochs finished in the current stage
    step_in_epoch: int = 0  # optimizer steps finished in the current epoch
    global_epoch: int = 0  # epochs finished over the whole run
    global_step: int = 0
    epoch_loss_sum: float = 0.0  # running sums of the current epoch, so a resumed epoch reports the same loss
    epoch_seen: int = 0
    epoch_term_sums: dict[str, float] = field(default_factory=dict)  # loss terms (distillation's) x samples
    stage_best: float | None = None
    stage_seconds: float = 0.0  # training + validation seconds of the current stage, across resumes
    stage_summaries: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int = -1
    best_stage: str = ""
    stage_steps: int = 0  # optimizer steps of the current stage (fixed at its start; a budget decides it)
    elapsed_seconds: float = 0.0  # wall clock of training so far, across resumes (what a budget counts)
    bn_recalibrated: bool = False
    stage_stopped: bool = False  # early stopping ended the current stage: a resumed run goes to the next

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunPosition:
        return cls(**data)

    def next_epoch(self) -> None:
        self.epoch_in_stage += 1
        self.global_epoch += 1
        self.step_in_epoch = 0
        self.epoch_loss_sum, self.epoch_seen = 0.0, 0
        self.epoch_term_sums = {}

    def next_stage(self) -> None:
        self.stage_index += 1
        self.stage_stopped = False
        self.epoch_in_stage = 0
        self.stage_best = None
        self.stage_seconds = 0.0


def epoch_generator(seed: int, global_epoch: int) -> torch.Generator:
    """The generator of one epoch's data order (a pure function of seed and epoch)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + global_epoch)


def step_generator(seed: int, global_step: int, rank: int) -> torch.Generator:
    """The generator of one optimizer step on one rank: augmentation, mixing and the dropout seed
    draw from it. Seeding per step means a resumed run needs no saved generator state."""
    return torch.Generator().manual_seed((seed * 1_000_003 + global_step) * 1_009 + rank + 7_919)


def capture_rng() -> dict[str, Any]:
    """Global RNG states, for code outside rooivalk's own per-step generators."""
    numpy_state: tuple[Any, ...] = tuple(np.random.get_state())
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class BudgetClock:
    """The training wall clock across resumes, and the cost of the last validation pass."""

    def __init__(self) -> None:
        self.started: float | None = None  # perf_counter() at the first stage entry of this process
        self.epoch_started: float | None = None  # perf_counter() when this process began the current epoch
        self.validation_seconds = 0.0  # one validation pass: the probe's reading, then the last epoch's

    def start(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def since_start(self) -> float:
        return time.perf_counter() - self.started if self.started is not None else 0.0

    def epoch_so_far(self) -> float:
        return time.perf_counter() - self.epoch_started if self.epoch_started is not None else 0.0
