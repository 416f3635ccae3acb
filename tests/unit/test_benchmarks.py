"""Smoke runs of benchmarks/*.py: tiny settings, and the last stdout line is the promised JSON object."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
WEIGHTS = REPO / ".cache/weights/tf_efficientnet_lite0.pth"


def run_benchmark(script: str, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return last


def test_trainer_overhead_prints_its_json_last() -> None:
    result = run_benchmark(
        "trainer_overhead.py",
        *("--architecture", "test_efficientnet", "--input-size", "32", "--steps", "3", "--rounds", "2"),
        *("--warmup", "1", "--threads", "1"),
    )
    assert result["benchmark"] == "trainer_overhead"
    assert result["rooivalk_step_ms"] > 0
    assert result["baseline_step_ms"] > 0
    assert result["ratio"] == pytest.approx(result["rooivalk_step_ms"] / result["baseline_step_ms"], rel=1e-2)
    assert result["target"] == 1.05
    assert isinstance(result["passed"], bool)
    assert len(result["rooivalk_round_medians_ms"]) == 2
    assert result["paired_round_ratio"] > 0


@pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file() or not WEIGHTS.is_file(),
    reason="needs Fashion-MNIST and the EfficientNet-Lite0 weights (`make data weights`)",
)
def test_unfreezing_prints_its_json_last_and_writes_results(tmp_path: Path) -> None:
    out_md, out_json = tmp_path / "unfreezing.md", tmp_path / "unfreezing.json"
    result = run_benchmark(
        "unfreezing.py",
        *("--seeds", "1", "--epochs", "1", "--max-train-batches", "2", "--input-size", "32"),
        *("--schedules", "head_only,progressive", "--per-class", "200", "--threads", "1"),
        *("--out-md", str(out_md), "--out-json", str(out_json), "--work-dir", str(tmp_path / "work")),
    )
    assert result["benchmark"] == "unfreezing"
    assert result["schedules"] == ["head_only", "progressive"]
    for name in result["schedules"]:
        assert 0.0 <= result[f"{name}_mean"] <= 1.0
        assert result[f"{name}_std"] == 0.0
    assert result["ratio"] is None  # no full_finetune baseline in this run
    saved = json.loads(out_json.read_text())
    assert [(run["schedule"], len(run["stages"])) for run in saved["runs"]] == [("head_only", 1), ("progressive", 3)]
    report = out_md.read_text()
    assert "Reproduce: `.venv/bin/python benchmarks/unfreezing.py --seeds 1" in report
    assert "| progressive | all |" in report
