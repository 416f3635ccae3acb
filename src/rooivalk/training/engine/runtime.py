"""Process-level settings of a training run: seeds and deterministic kernels, the device, SIGTERM."""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # Deterministic kernels make a resumed run bit-identical to an uninterrupted one.
    torch.use_deterministic_algorithms(deterministic)


@contextmanager
def sigterm_requests_stop() -> Iterator[threading.Event]:
    """While active, SIGTERM sets the event instead of killing the process (main thread only)."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: event.set())
    try:
        yield event
    finally:
        signal.signal(signal.SIGTERM, previous)


def training_device(precision: str) -> torch.device:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("training.precision: fp16 needs a CUDA GPU (use bf16 on CPU)")
    return device


def noop(*_: Any) -> None:
    return None


def native_bf16(device: torch.device) -> bool:
    """Whether the device runs bf16 natively (CUDA with bf16, or a CPU with AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
