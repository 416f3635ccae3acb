"""What a report says about the machine it measured on.

Wall-clock figures (training budgets, step times, latencies) compare only between runs on the same
CPU: two 2-core VMs of this project ran the same EfficientNet-Lite0 step at 210-229 ms and at 141 ms,
so reports name the CPU model, not only the architecture and the core count.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, which containers narrow), else all."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's marketing name from Linux's cpuinfo, else what `platform` knows."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    """e.g. 'AMD EPYC (x86_64), 2 CPU cores'."""
    return f"{cpu_model()} ({platform.machine()}), {cpu_count()} CPU cores"
