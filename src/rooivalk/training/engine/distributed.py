"""Data-parallel training with torchrun: process group, sharding, reductions, and the launcher.

`train_model` with `training.distributed.nproc_per_node > 1` re-launches itself under torchrun
(`python -m torch.distributed.run`), one worker per process: DDP over gloo on CPU and NCCL on GPU,
each rank reading its shard of every epoch through torch's DistributedSampler. Only rank 0 logs,
emits progress and writes checkpoints; losses and validation counts are summed across ranks.
torchrun's --max-restarts restarts all workers when one dies, and they resume from the newest
checkpoint. Restarts are done by relaunching torchrun rather than by its elastic --max-restarts:
measured here, a gloo group re-formed by an elastic restart in --standalone mode fails to connect,
while a fresh torchrun resumes cleanly from the checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from rooivalk.plan import Plan
from rooivalk.training.engine.errors import Preempted

log = logging.getLogger(__name__)
WORKER_MODULE = "rooivalk.training.worker"
RESULT_FILE = "train_result.json"


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: float) -> list[float]:
        """Sum scalars over all ranks (identity in one process)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return [float(v) for v in tensor.tolist()]

    def any(self, flag: bool) -> bool:
        """True on every rank when any rank says True: all ranks stop at the same step."""
        return self.sum(1.0 if flag else 0.0)[0] > 0 if self.enabled else flag

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def in_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_process_group(backend: str, device: torch.device) -> DistContext:
    """Join the process group torchrun set up; a single process gets the trivial context."""
    if not in_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistContext()
    chosen = backend if backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend=chosen)
    context = DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        torch.cuda.set_device(context.local_rank)
    return context


def shutdown(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def torchrun_command(plan: Plan, dataset_dir: str, model_dir: str, plan_path: Path, max_restarts: int) -> list[str]:
    spec = plan.training.distributed
    nodes = (
        ["--standalone"]
        if spec.nnodes == 1
        else [
            f"--nnodes={spec.nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={os.environ.get('ROOIVALK_RDZV_ENDPOINT', 'localhost:29400')}",
            f"--rdzv-id={os.environ.get('ROOIVALK_RDZV_ID', plan.digest()[:16])}",
        ]
    )
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *nodes,
        f"--nproc-per-node={spec.nproc_per_node}",
        f"--max-restarts={max_restarts}",
        "-m",
        WORKER_MODULE,
        str(plan_path),
        dataset_dir,
        model_dir,
    ]


def launch(plan: Plan, dataset_dir: str, model_dir: str, max_restarts: int = 1) -> dict[str, Any]:
    """Run training under torchrun, relaunching up to `max_restarts` times after a failure (each
    attempt resumes from the newest checkpoint); return rank 0's result record."""
    Path(model_dir).mkdir(parents=True, exist_ok=True)
    plan_path = Path(model_dir) / ".plan.json"
    plan_path.write_text(plan.model_dump_json())
    try:
        for attempt in range(max_restarts + 1):
            process = subprocess.run(torchrun_command(plan, dataset_dir, model_dir, plan_path, 0), check=False)
            if process.returncode in (0, 143) or plan.training.checkpoint.uri is None:
                break  # success, a preemption (SIGTERM) or nothing to resume from
            log.warning("torchrun attempt %d failed (exit %d); relaunching", attempt + 1, process.returncode)
    finally:
        plan_path.unlink(missing_ok=True)
    if process.returncode == 143:
        raise Preempted("torchrun workers were stopped by SIGTERM after writing a checkpoint; rerun to resume")
    if process.returncode != 0:
        raise RuntimeError(f"torchrun exited with code {process.returncode}; see the worker logs above")
    result: dict[str, Any] = json.loads((Path(model_dir) / RESULT_FILE).read_text())
    return result
