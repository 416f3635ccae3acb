"""DDP with torchrun on 2 CPU processes (gloo): trains like one process, and survives a killed rank."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rooivalk.plan import Plan
from rooivalk.training import train_model
from rooivalk.training.engine.distributed import DistContext, torchrun_command

WORKER = Path(__file__).with_name("resume_worker.py")
REPO = Path(__file__).resolve().parents[3]


def _plan(dataset_dir: str, nproc: int, checkpoint_uri: str, epochs: int = 6) -> Plan:
    return Plan.model_validate(
        {
            "name": "ddp",
            "data": {"source": dataset_dir, "format": "image_folder"},
            "model": {"architecture": "test_efficientnet", "input_size": 32, "drop_rate": 0.0},
            "training": {
                "batch_size": 8,
                "epochs": epochs,
                "lr": 3e-3,
                "threads": 1,
                "distributed": {"nproc_per_node": nproc},
                "checkpoint": {"uri": checkpoint_uri, "every_steps": 1},
            },
        }
    )


def _worker_pids(model_dir: str) -> list[int]:
    """torchrun's worker processes for this run (its own command line names the module too)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"rooivalk.training.worker" in args and model_dir.encode() in args and b"torch.distributed.run" not in args:
            pids.append(int(proc.name))
    return sorted(pids)


def test_single_process_context_is_inert() -> None:
    context = DistContext()
    assert not context.enabled
    assert context.sum(1.5, 2.0) == [1.5, 2.0]
    assert context.any(True)


def test_torchrun_command_is_standalone_with_restarts(tmp_path: Path) -> None:
    command = torchrun_command(_plan("/data", 2, "/ckpt"), "/data", "/model", tmp_path / "plan.json", 1)
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert "--standalone" in command
    assert "--nproc-per-node=2" in command
    assert "--max-restarts=1" in command  # launch() itself passes 0 and relaunches instead


@pytest.mark.slow
def test_two_processes_train_like_one(tiny_dataset_dir: str, tmp_path: Path) -> None:
    histories: dict[int, list[float]] = {}
    for nproc in (1, 2):
        logged: list[float] = []
        result = train_model(
            _plan(tiny_dataset_dir, nproc, str(tmp_path / f"ckpt{nproc}")),
            tiny_dataset_dir,
            str(tmp_path / f"model{nproc}"),
            log_metrics=lambda m, s, out=logged: out.append(m["val_accuracy"]),
        )
        histories[nproc] = logged
        assert (tmp_path / f"model{nproc}" / "model.pt").is_file()
        assert result.metrics["global_steps"] == 6 * 5  # 43 train images, global batch 8: 5 full batches
    assert len(histories[2]) == 6  # rank 0's per-epoch metrics reach this process's logger
    # same accuracy class: both clearly above chance (1/3) on the tiny shapes
    assert max(histories[1]) > 0.5
    assert max(histories[2]) > 0.5


@pytest.mark.slow
def test_run_resumes_after_one_rank_is_killed(tiny_dataset_dir: str, tmp_path: Path) -> None:
    checkpoint_dir = tmp_path / "ckpt"
    model_dir = tmp_path / "model"
    plan = _plan(tiny_dataset_dir, 2, str(checkpoint_dir), epochs=8)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan.model_dump_json())
    launcher = subprocess.Popen(
        [sys.executable, str(WORKER), str(plan_file), tiny_dataset_dir, str(model_dir)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    manifest = checkpoint_dir / "manifest.json"
    deadline = time.monotonic() + 120
    while not manifest.exists() or json.loads(manifest.read_text())[-1]["global_step"] < 12:
        assert launcher.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.02)
    workers = _worker_pids(str(model_dir))
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)  # one rank dies
    assert launcher.wait(timeout=240) == 0  # torchrun was relaunched and both workers resumed
    record = json.loads((model_dir / "train_result.json").read_text())
    assert "/ckpt/ckpt-" in record["resumed_from"]
    assert record["metrics"]["global_steps"] == 8 * 5
    assert torch.load(model_dir / "model.pt", weights_only=True)
