"""Preemption: SIGKILL at several points or SIGTERM, rerun, and the weights are bit-identical."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rooivalk.plan import Plan
from rooivalk.training import train_model
from rooivalk.training.engine.checkpoint import CheckpointError, CheckpointStore

WORKER = Path(__file__).with_name("resume_worker.py")
REPO = Path(__file__).resolve().parents[3]


def _plan(dataset_dir: str, checkpoint_uri: str, architecture: str = "test_efficientnet") -> Plan:
    return Plan.model_validate(
        {
            "name": "resume",
            "data": {"source": dataset_dir, "format": "image_folder"},
            "model": {"architecture": architecture, "input_size": 32, "drop_rate": 0.2},
            "training": {
                "batch_size": 8,
                "threads": 1,
                "deterministic": True,
                "seed": 3,
                "stages": [
                    {"name": "head", "epochs": 1, "train": ["head"], "lr": {"head": 1e-2}},
                    {"name": "all", "epochs": 2, "train": ["all"], "lr": {"top": 3e-3, "ratio": 2.6}},
                ],
                "mix": {"mixup_alpha": 0.2},
                "augment": {"hflip": 0.5, "rotation": 10},
                "ema": {"enabled": True, "decay": 0.9},
                "checkpoint": {"uri": checkpoint_uri, "every_steps": 1, "keep_last": 2},
            },
        }
    )


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(model_dir / "model.pt", weights_only=True)


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []


def _newest_step(checkpoint_dir: Path) -> int:
    try:
        entries = json.loads((checkpoint_dir / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return entries[-1]["global_step"] if entries else 0


def _start(plan: Plan, dataset_dir: str, model_dir: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    plan_file = tmp_path / f"plan-{time.monotonic_ns()}.json"
    plan_file.write_text(plan.model_dump_json())
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(plan_file), dataset_dir, str(model_dir)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _interrupt_at(proc: subprocess.Popen[bytes], checkpoint_dir: Path, step: int, sig: signal.Signals) -> int:
    deadline = time.monotonic() + 120
    while _newest_step(checkpoint_dir) < step:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "worker died"
        assert time.monotonic() < deadline, "worker made no progress"
        time.sleep(0.01)
    proc.send_signal(sig)
    return proc.wait(timeout=60)


@pytest.fixture
def reference(tiny_dataset_dir: str, tmp_path: Path) -> dict[str, torch.Tensor]:
    """The uninterrupted run."""
    train_model(_plan(tiny_dataset_dir, str(tmp_path / "ref-ckpt")), tiny_dataset_dir, str(tmp_path / "ref"))
    return _weights(tmp_path / "ref")


@pytest.mark.slow
def test_sigkill_at_several_points_then_rerun_is_bit_identical(
    tiny_dataset_dir: str, tmp_path: Path, reference: dict[str, torch.Tensor]
) -> None:
    # 43 training images / batch 8 = 5 full batches per epoch, 15 steps in all: kill mid-head-stage,
    # right at the stage boundary, and mid-epoch in the last stage.
    for kill_step in (3, 5, 12):
        checkpoint_dir = tmp_path / f"ckpt-{kill_step}"
        plan = _plan(tiny_dataset_dir, str(checkpoint_dir))
        proc = _start(plan, tiny_dataset_dir, tmp_path / f"killed-{kill_step}", tmp_path)
        assert _interrupt_at(proc, checkpoint_dir, kill_step, signal.SIGKILL) == -signal.SIGKILL
        result = train_model(plan, tiny_dataset_dir, str(tmp_path / f"resumed-{kill_step}"))
        assert result.resumed_from is not None
        _assert_identical(_weights(tmp_path / f"resumed-{kill_step}"), reference)


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(
    tiny_dataset_dir: str, tmp_path: Path, reference: dict[str, torch.Tensor]
) -> None:
    checkpoint_dir = tmp_path / "ckpt"
    plan = _plan(tiny_dataset_dir, str(checkpoint_dir))
    proc = _start(plan, tiny_dataset_dir, tmp_path / "first", tmp_path)
    assert _interrupt_at(proc, checkpoint_dir, 4, signal.SIGTERM) == 143
    manifest = json.loads((checkpoint_dir / "manifest.json").read_text())
    assert manifest[-1]["reason"] == "preempt"
    assert not (tmp_path / "first" / "model.pt").exists()  # no half-trained model was published
    train_model(plan, tiny_dataset_dir, str(tmp_path / "second"))
    _assert_identical(_weights(tmp_path / "second"), reference)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(
    tiny_dataset_dir: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint_dir = tmp_path / "ckpt"
    train_model(_plan(tiny_dataset_dir, str(checkpoint_dir)), tiny_dataset_dir, str(tmp_path / "model"))
    store = CheckpointStore(str(checkpoint_dir))
    newest, previous = store.manifest()[-1], store.manifest()[-2]
    (checkpoint_dir / newest["file"]).write_bytes(b"partial write")
    loaded = store.load_latest()
    assert loaded is not None
    assert loaded.entry["file"] == previous["file"]
    assert "sha256 mismatch" in loaded.skipped[0]
    assert newest["file"] in caplog.text


def test_resume_with_a_changed_model_is_refused_naming_the_change(tiny_dataset_dir: str, tmp_path: Path) -> None:
    checkpoint_dir = str(tmp_path / "ckpt")
    plan = _plan(tiny_dataset_dir, checkpoint_dir)
    short = plan.model_copy(update={"training": plan.training.model_copy(update={"max_train_batches": 1})})
    train_model(short, tiny_dataset_dir, str(tmp_path / "model"))
    changed = _plan(tiny_dataset_dir, checkpoint_dir, architecture="test_resnet")
    with pytest.raises(CheckpointError, match=r"model differs from the checkpoint's \(.*(removed|added)"):
        train_model(changed, tiny_dataset_dir, str(tmp_path / "model2"))
