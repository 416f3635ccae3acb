"""The detector example plans through `rooivalk run` (kfp.local, MLflow on sqlite), at tiny scale:
pipelines/plans/counter_drone_detection.yaml (the optical simulator's frames with drone, bird and
aircraft boxes), and pipelines/plans/detection.yaml pointed at a user's own YOLO folder by changing
data.source only, with its bad labels quarantined, trained as a two-member ensemble. (detection.yaml's
own simulated shapes go through the same steps in tests/unit/training/test_detection_training.py; a third
pipeline run here would cost CI a minute for no path the other two do not take.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from rooivalk.export import Predictor

REPO = Path(__file__).resolve().parents[2]
DETECTION = REPO / "pipelines" / "plans" / "detection.yaml"
COUNTER_DRONE = REPO / "pipelines" / "plans" / "counter_drone_detection.yaml"

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Tiny scale: what CI can afford; the plans' own figures are measured by benchmarks/ and docs/results.
TINY = [
    "evaluation.gates=[]",
    "export.latency_runs=100",
    "export.latency_warmup=1",
    "export.precisions=[fp32,int8_static]",
    "export.quantization.samples=16",
    "training.threads=1",
    "training.budget_seconds=null",
    "training.auto.head_epochs=1",
    "training.epochs=1",
    "training.early_stopping.enabled=false",
]
STEPS = ["ingest_data", "train_model", "evaluate_model", "export_model", "register_model"]


def _run(plan: Path, out: Path, overrides: list[str]) -> dict[str, Any]:
    sets = [arg for override in overrides for arg in ("--set", override)]
    result = subprocess.run(
        [sys.executable, "-m", "rooivalk.cli.app", "run", str(plan), "--out", str(out), *sets],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert list(summary["steps"]) == STEPS
    return summary


def _step_file(out: Path, step: str, name: str) -> Path:
    (found,) = sorted((out / "pipeline_root").glob(f"*/{step}/**/{name}"))
    return found


def _report(out: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(_step_file(out, "evaluate-model", "evaluation.json").read_text())
    return report


def test_the_counter_drone_detection_plan_runs_and_ships_a_bundle_that_returns_boxes(tmp_path: Path) -> None:
    classes = ["drone", "bird", "aircraft"]
    source = tmp_path / "frames"
    out = tmp_path / "run"
    _run(COUNTER_DRONE, out, [f"data.source={source}", "data.simulate.count=80", *TINY])
    assert (source / "data.yaml").is_file()
    assert (source / "simulation.json").is_file()
    rendered = subprocess.run(
        [sys.executable, "-m", "rooivalk.cli.app", "report", str(out / "summary.json"), "-o", str(out / "report.md")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    text = (out / "report.md").read_text()
    assert "| drone |" in text  # per-class AP@0.5
    assert "ONNX Runtime FP32" in text
    report = _report(out)
    assert report["kind"] == "detection"
    assert report["classes"] == classes
    assert 0.0 <= report["map50"] <= 1.0
    assert set(report["operating_points"]) == {"recall", "balanced", "precision"}
    export_report = json.loads(_step_file(out, "export-model", "export_report.json").read_text())
    assert export_report["calibration"]["validation"]["classes"].keys() == set(classes)  # the plan calibrates
    predictor = Predictor.load(str(_step_file(out, "export-model", "bundle.json").parent))
    frames = sorted((source / "images").rglob("*.png"))[:2]
    images = [np.asarray(Image.open(frame).convert("RGB")) for frame in frames]
    images.append(np.zeros((200, 90, 3), np.uint8))  # any size: letterboxed by the bundle
    found = predictor.detect(images, score_threshold=0.0)
    assert len(found) == 3
    for detections, image in zip(found, images, strict=True):
        boxes = np.asarray(detections["boxes"])
        assert boxes.ndim == 2
        assert boxes.shape[1] == 4
        height, width = image.shape[:2]
        assert (boxes >= -1e-3).all()
        assert (boxes[:, [0, 2]] <= width + 1e-3).all()
        assert (boxes[:, [1, 3]] <= height + 1e-3).all()


def _write_user_folder(root: Path) -> None:
    """A user's YOLO folder: other classes, other image sizes, two bad labels."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "data.yaml").write_text("names: [buoy, boat]\n")
    for index in range(40):
        width, height = (200, 120) if index % 2 else (150, 150)
        image = np.full((height, width, 3), 40, np.uint8)
        x, y, size = int(rng.integers(10, width - 50)), int(rng.integers(10, height - 50)), int(rng.integers(15, 40))
        label = index % 2
        image[y : y + size, x : x + size] = (230, 80, 20) if label else (20, 200, 240)
        Image.fromarray(image).save(root / "images" / f"img{index:03d}.png")
        cx, cy = (x + size / 2) / width, (y + size / 2) / height
        line = f"{label} {cx:.6f} {cy:.6f} {size / width:.6f} {size / height:.6f}\n"
        if index == 3:
            line = "0 1.4 0.5 0.1 0.1\n"  # a centre outside the image
        if index == 5:
            line = "1 0.5 0.5 0 0.2\n"  # a zero-size box
        (root / "labels" / f"img{index:03d}.txt").write_text(line)


def test_the_generic_plan_reads_a_users_yolo_folder_with_bad_labels_quarantined(tmp_path: Path) -> None:
    source = tmp_path / "user-yolo"
    _write_user_folder(source)
    out = tmp_path / "run"
    # ...as an ensemble of two detectors, which the bundle fuses.
    _run(DETECTION, out, [f"data.source={source}", "data.simulate=null", "model.detector.ensemble={members: 2}", *TINY])
    quarantine = json.loads(_step_file(out, "ingest-data", "quarantine.json").read_text())
    named = json.dumps(quarantine)
    assert "img003.txt" in named
    assert "img005.txt" in named
    report = _report(out)
    assert report["classes"] == ["buoy", "boat"]
    assert report["images"] >= 4
    assert [member["member"] for member in report["ensemble"]["members"]] == [0, 1]
    predictor = Predictor.load(str(_step_file(out, "export-model", "bundle.json").parent))
    image = np.asarray(Image.open(source / "images" / "img000.png").convert("RGB"))
    (found,) = predictor.detect([image], score_threshold=0.0)
    assert set(found["class_names"]) <= {"buoy", "boat"}
