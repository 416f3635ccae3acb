"""What a run folder holds for its report, gathered in one place: summary.json, the per-epoch curves of
events.jsonl, the evaluation and export reports the steps wrote, the reliability of the model's
confidence, and the lineage the MLflow parent run carries.

Everything past summary.json is optional: a run folder copied from another machine (artifact URIs that
no longer resolve), a failed run or an older summary still renders, with a note saying what is missing.
Artifact URIs are absolute where the run wrote them; when one no longer resolves, the same path below
the run folder's pipeline_root is tried, so a moved run folder keeps its figures.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rooivalk import storage

# summary step -> the artifact that holds its report file
EVALUATION_STEPS = (("evaluate_model", "report"), ("evaluate_system", "report"))
EXPORT_STEPS = (("export_model", "exported"), ("export_system", "exported"))
DATASET_STEPS = (("ingest_data", "dataset"), ("ingest_events", "dataset"))
VAL_CODE = 1  # rooivalk.data.dataset.SPLIT_CODES["val"]; the reference profile's split


@dataclass
class Curve:
    """One model's epochs in the order they ran: the stage of each and its figures (NaN where absent)."""

    model: str
    stages: list[str] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    score_label: str = "val accuracy"  # a detector's curves carry val mAP@0.5 instead


@dataclass
class Reliability:
    """Top-1 confidence against correctness on a split: `bins` equal-width bins over [0, 1]."""

    split: str
    confidence: np.ndarray  # (N,)
    predicted: np.ndarray  # (N,) class names
    truth: np.ndarray  # (N,) class names
    classes: list[str]
    bins: int = 10

    @property
    def correct(self) -> np.ndarray:
        return np.asarray(self.predicted == self.truth)

    def confusion(self) -> list[list[int]]:
        """Counts on this split, rows the true class and columns the predicted one, in `classes` order."""
        index = {name: k for k, name in enumerate(self.classes)}
        matrix = np.zeros((len(self.classes), len(self.classes)), dtype=int)
        for true, predicted in zip(self.truth, self.predicted, strict=True):
            if true in index and predicted in index:  # a class the dataset does not name is no cell
                matrix[index[true], index[predicted]] += 1
        return [[int(v) for v in row] for row in matrix]

    def table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(bin centre, mean confidence, accuracy, count) per bin; empty bins have NaN figures."""
        edges = np.linspace(0.0, 1.0, self.bins + 1)
        index = np.clip(np.digitize(self.confidence, edges[1:-1]), 0, self.bins - 1)
        count = np.bincount(index, minlength=self.bins).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            conf = np.bincount(index, self.confidence, self.bins) / count
            acc = np.bincount(index, self.correct.astype(float), self.bins) / count
        return (edges[:-1] + edges[1:]) / 2, conf, acc, count

    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean |accuracy - confidence| over the bins."""
        _, conf, acc, count = self.table()
        filled = count > 0
        return float(np.sum(count[filled] * np.abs(acc[filled] - conf[filled])) / max(1.0, count.sum()))


@dataclass
class RunFolder:
    run_dir: Path
    summary: dict[str, Any]
    curves: list[Curve]
    evaluation: dict[str, Any] | None
    export: dict[str, Any] | None
    reliability: Reliability | None
    lineage: dict[str, str]
    notes: list[str]  # what could not be read, and why
    summary_path: Path

    @property
    def steps(self) -> dict[str, Any]:
        steps: dict[str, Any] = self.summary.get("steps", {})
        return steps

    @property
    def is_system(self) -> bool:
        return "evaluate_system" in self.steps


def load_run_folder(run_dir: Path, tracking: bool = True, summary_path: Path | None = None) -> RunFolder:
    """The run folder's report data; `summary_path` when the summary is not <run_dir>/summary.json (a copy
    kept in docs/results); `tracking=False` skips the MLflow look-up (lineage then comes from the
    evaluation and export reports only)."""
    summary_path = summary_path or run_dir / "summary.json"
    summary = json.loads(summary_path.read_text())
    notes: list[str] = []
    evaluation = _step_json(run_dir, summary, EVALUATION_STEPS, "evaluation.json", notes)
    export = _step_json(run_dir, summary, EXPORT_STEPS, "export_report.json", notes)
    events_path = run_dir / "events.jsonl"
    curves = read_curves(events_path) if events_path.is_file() else []
    if not curves:
        notes.append(f"no epoch_end events in {events_path}: no training curves")
    folder = RunFolder(run_dir, summary, curves, evaluation, export, None, {}, notes, summary_path)
    folder.reliability = _reliability(folder)
    folder.lineage = _lineage(folder, tracking)
    return folder


def read_curves(events_path: Path) -> list[Curve]:
    """Per model (the event's `model`, else its step), the epoch_end events in the order they were written."""
    curves: dict[str, Curve] = {}
    for line in events_path.read_text().splitlines():
        if '"epoch_end"' not in line:  # most lines are batch progress: skip them before parsing
            continue
        event = json.loads(line)
        if event.get("event") != "epoch_end":
            continue
        name = str(event.get("model") or event.get("step") or "model").removeprefix("train_")
        curve = curves.setdefault(name, Curve(name))
        curve.stages.append(str(event.get("stage", "")))
        curve.train_loss.append(_number(event.get("train_loss")))
        curve.val_loss.append(_number(event.get("val_loss")))
        if "val_accuracy" not in event and "val_map50" in event:
            curve.score_label = "val mAP@0.5"
        curve.val_accuracy.append(_number(event.get("val_accuracy", event.get("val_map50"))))
        curve.lr.append(_number(event.get("lr_at_epoch_end", event.get("lr"))))
    return list(curves.values())


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def _resolve(run_dir: Path, uri: str) -> str | None:
    """`uri` when it exists, else the same path below this run folder's pipeline_root (a moved folder)."""
    if "://" in uri or Path(uri).exists():
        return uri
    parts = Path(uri).parts
    if "pipeline_root" in parts:
        moved = run_dir.joinpath(*parts[parts.index("pipeline_root") :])
        if moved.exists():
            return str(moved)
    return None


def _artifact_dir(run_dir: Path, summary: dict[str, Any], candidates: tuple[tuple[str, str], ...]) -> str | None:
    for step, artifact in candidates:
        uri = summary.get("steps", {}).get(step, {}).get("artifacts", {}).get(artifact, {}).get("uri")
        if uri:
            return _resolve(run_dir, uri)
    return None


def _step_json(
    run_dir: Path, summary: dict[str, Any], candidates: tuple[tuple[str, str], ...], name: str, notes: list[str]
) -> dict[str, Any] | None:
    folder = _artifact_dir(run_dir, summary, candidates)
    if folder is None:
        notes.append(f"no {name}: the run has no {' or '.join(s for s, _ in candidates)} artifact that resolves here")
        return None
    try:
        data: dict[str, Any] = json.loads(storage.read_bytes(f"{folder}/{name}"))
    except (OSError, ValueError) as error:
        notes.append(f"{folder}/{name}: {error}")
        return None
    return data


def _reliability(folder: RunFolder) -> Reliability | None:
    """Reliability on the reference profile's split (validation): the profile holds each sample's prediction
    and top-1 confidence in the dataset's row order of that split, and the dataset's labels.npy/splits.npy
    say what each sample is. None, with a note, where any of the three is missing or they disagree."""
    profile_uri = (folder.evaluation or {}).get("reference_profile")
    dataset_dir = _artifact_dir(folder.run_dir, folder.summary, DATASET_STEPS)
    if not profile_uri or dataset_dir is None:
        folder.notes.append("no reliability diagram: the run has no reference profile or no dataset folder")
        return None
    try:
        import pandas as pd

        profile_dir = _resolve(folder.run_dir, profile_uri) or profile_uri
        info = json.loads(storage.read_bytes(f"{profile_dir}/profile.json"))
        frame = pd.read_parquet(
            io.BytesIO(storage.read_bytes(f"{profile_dir}/profile.parquet")), columns=["prediction", "confidence"]
        )
        classes = json.loads(storage.read_bytes(f"{dataset_dir}/dataset.json"))["classes"]
        labels = np.load(io.BytesIO(storage.read_bytes(f"{dataset_dir}/labels.npy")), allow_pickle=False)
        splits = np.load(io.BytesIO(storage.read_bytes(f"{dataset_dir}/splits.npy")), allow_pickle=False)
    except (OSError, ValueError, KeyError) as error:
        folder.notes.append(f"no reliability diagram: {error}")
        return None
    if info.get("split") != "val":
        folder.notes.append(f"no reliability diagram: the reference profile's split is {info.get('split')!r}")
        return None
    truth = labels[splits == VAL_CODE]
    if len(truth) != len(frame) or truth.ndim != 1:
        folder.notes.append(
            f"no reliability diagram: the profile has {len(frame)} rows, the dataset's val split {len(truth)} labels"
        )
        return None
    names = np.asarray(classes, dtype=object)[truth.astype(int)]
    predicted = frame["prediction"].to_numpy(dtype=object)
    return Reliability("val", frame["confidence"].to_numpy(dtype=float), predicted, names, list(classes))


def _lineage(folder: RunFolder, tracking: bool) -> dict[str, str]:
    """Dataset version, plan digest, git commit and package versions: the parent run's lineage tags
    (rooivalk.tracking.runs.lineage_tags) where MLflow answers, else what the reports recorded."""
    lineage: dict[str, str] = {}
    for report in (folder.export, folder.evaluation):
        for key in ("dataset_version", "plan_digest"):
            if report and report.get(key):
                lineage.setdefault(key, str(report[key]))
    if folder.summary.get("dataset_version"):
        lineage["dataset_version"] = str(folder.summary["dataset_version"])
    run = folder.summary.get("tracking", {})
    if run.get("run_id"):
        lineage["mlflow_run"] = f"{run['run_id']} at {run.get('uri')}"
    if tracking and run.get("run_id") and run.get("uri"):
        lineage.update(_tracking_tags(run["uri"], run["run_id"], folder.notes))
    return lineage


def _tracking_tags(uri: str, run_id: str, notes: list[str]) -> dict[str, str]:
    try:
        tags = _read_tags(uri, run_id)
    except Exception as error:  # any MLflow failure (server gone, db moved) only costs the tags
        notes.append(f"lineage tags not read from MLflow ({type(error).__name__}: {str(error)[:200]})")
        return {}
    found: dict[str, list[str]] = defaultdict(list)
    for key, value in sorted(tags.items()):
        if key.startswith("rooivalk.version."):
            found["packages"].append(f"{key.removeprefix('rooivalk.version.')} {value}")
        elif key in ("rooivalk.git_commit", "rooivalk.plan_digest", "rooivalk.dataset_version"):
            found[key.removeprefix("rooivalk.")].append(value)
    return {key: ", ".join(values) for key, values in found.items()}


def _read_tags(uri: str, run_id: str) -> dict[str, str]:
    """The run's tags. A local sqlite store is read read-only with sqlite3: opening it through MLflow may
    upgrade its schema, and a report must not change the run it reports (nor pay MLflow's import)."""
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
        if not Path(path).is_file():
            raise FileNotFoundError(path)
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return dict(db.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)).fetchall())
    from rooivalk.tracking.buffer import TrackingOffline, is_offline_id
    from rooivalk.tracking.runs import run_tags

    tags = run_tags(uri, run_id)  # None, without MLflow's minutes of retries, when it cannot answer
    if tags is None:
        if is_offline_id(run_id):
            raise TrackingOffline(f"run {run_id} was buffered while {uri} was unreachable: `rooivalk sync` it first")
        raise TrackingOffline(f"{uri} does not answer /health")
    return tags
