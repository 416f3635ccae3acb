"""`rooivalk run`: execute the compiled training pipeline with kfp.local's SubprocessRunner.

The pipeline function and components are the very ones `rooivalk compile` emits. kfp.local prints
each task's log to stdout; during the run that goes to <out>/pipeline.log while the terminal shows
rich progress built from step events (rooivalk.events).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from rooivalk import events, storage
from rooivalk.cli.progress import PipelineProgress
from rooivalk.cli.summary import build_summary
from rooivalk.plan import ModelSpec, Plan, TrainingSpec

SUMMARY_FILE = "summary.json"


@dataclass
class RunOutcome:
    summary: dict[str, Any]
    summary_path: Path


def resolve_plan(plan: Plan, out_dir: Path) -> Plan:
    """Absolute local paths (steps run as subprocesses); default tracking and checkpoint URIs in the run folder."""
    from rooivalk.tracking import default_tracking_uri

    data = plan.data.model_copy(update={"source": _absolute(plan.data.source)})
    model = plan.model and _absolute_weights(plan.model)
    # A stable checkpoint location per training step makes a rerun of the same command (same --out)
    # resume training where it stopped.
    sensors = plan.sensors and {
        name: sensor.model_copy(
            update={
                "model": _absolute_weights(sensor.model),
                "training": _with_checkpoint(sensor.training, out_dir / "checkpoints" / f"train_sensor_{name}"),
            }
        )
        for name, sensor in plan.sensors.items()
    }
    tracking = plan.tracking.model_copy(
        update={
            "uri": plan.tracking.uri or default_tracking_uri(out_dir),
            "buffer_uri": _absolute(plan.tracking.buffer_uri or str(out_dir / "tracking-buffer")),
            "log_uri": _absolute(plan.tracking.log_uri or str(out_dir / "logs")) if plan.tracking.loggers else None,
        }
    )
    # A multi-sensor plan's top-level training section applies to no model (plan validation refuses it).
    training = (
        plan.training if plan.sensors else _with_checkpoint(plan.training, out_dir / "checkpoints" / "train_model")
    )
    # A feature cache in the run folder: a rerun with the same --out does zero encoder forward passes.
    fusion = plan.fusion and plan.fusion.model_copy(
        update={
            "cache_uri": _absolute(plan.fusion.cache_uri or str(out_dir / "feature-cache")),
            "training": _with_checkpoint(plan.fusion.training, out_dir / "checkpoints" / "train_fusion"),
        }
    )
    attribution = plan.attribution and plan.attribution.model_copy(
        update={
            "data": plan.attribution.data.model_copy(update={"source": _absolute(plan.attribution.data.source)}),
            "training": _with_checkpoint(plan.attribution.training, out_dir / "checkpoints" / "train_attribution"),
        }
    )
    return plan.model_copy(
        update={
            "data": data,
            "model": model,
            "sensors": sensors,
            "fusion": fusion,
            "attribution": attribution,
            "tracking": tracking,
            "training": training,
        }
    )


def _with_checkpoint(training: TrainingSpec, default_dir: Path) -> TrainingSpec:
    """The training section with an absolute checkpoint URI: its own, or `default_dir`; and an absolute
    distillation teacher (steps run as subprocesses, in other folders)."""
    uri = _absolute(training.checkpoint.uri or str(default_dir))
    update: dict[str, Any] = {"checkpoint": training.checkpoint.model_copy(update={"uri": uri})}
    if training.distillation is not None:
        teacher = training.distillation.teacher
        teachers = [_absolute(t) for t in teacher] if isinstance(teacher, list) else _absolute(teacher)
        update["distillation"] = training.distillation.model_copy(update={"teacher": teachers})
    return training.model_copy(update=update)


def _absolute_weights(spec: ModelSpec) -> ModelSpec:
    return spec.model_copy(update={"pretrained": _absolute(spec.pretrained) if spec.pretrained else None})


def _absolute(uri: str) -> str:
    return uri if "://" in uri else str(Path(uri).expanduser().resolve())


class _Pipeline(threading.Thread):
    def __init__(
        self,
        function: Callable[..., Any],
        arguments: dict[str, Any],
        root: Path,
        log_path: Path,
    ) -> None:
        super().__init__(daemon=True)
        self.function, self.arguments, self.root, self.log_path = function, arguments, root, log_path
        self.error: BaseException | None = None

    def run(self) -> None:
        from kfp import local

        with open(self.log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                local.init(
                    runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(self.root), raise_on_error=True
                )
                self.function(**self.arguments)
            except BaseException as error:  # reported by the main thread
                self.error = error


def run_local(plan: Plan, out_dir: Path, console: Console, retrain_from: str | None = None) -> RunOutcome:
    """Run the plan's training pipeline, or with `retrain_from` (a dataset folder URI, its _READY marker,
    or "" for the plan's own source) the retraining pipeline around it."""
    from rooivalk.tracking import find_pipeline_run, use_buffer_of
    from rooivalk.tracking.buffer import pending_records
    from rooivalk_kfp.pipelines.select import pipeline_for

    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = resolve_plan(plan, out_dir)
    storage.write_text(out_dir / "plan.yaml", yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False))
    events_path = out_dir / "events.jsonl"
    events_path.unlink(missing_ok=True)
    os.environ[events.EVENTS_ENV] = str(events_path)  # inherited by kfp.local's step subprocesses
    run_key = uuid.uuid4().hex
    chosen = pipeline_for(
        resolved, parallelism=1, on_cluster=False
    )  # one sensor task at a time: see multisensor_pipeline
    arguments: dict[str, Any] = {"plan": resolved.to_parameter(), "run_key": run_key}
    function = chosen.function
    if retrain_from is not None:
        from rooivalk_kfp.pipelines.retraining import PIPELINE_NAME, retraining_pipeline

        function = retraining_pipeline(resolved, parallelism=1, on_cluster=False)
        arguments["data_uri"] = retrain_from
        chosen = replace(chosen, name=PIPELINE_NAME)
    worker = _Pipeline(function, arguments, out_dir / "pipeline_root", out_dir / "pipeline.log")
    collected: list[dict[str, Any]] = []
    offset = 0
    started = time.perf_counter()
    interrupted = False
    with PipelineProgress(console, chosen.steps) as view:
        worker.start()
        try:
            while True:
                alive = worker.is_alive()
                new, offset = events.read_events(str(events_path), offset)
                for event in new:
                    view.handle(event)
                collected.extend(new)
                if not alive:
                    break
                time.sleep(0.2)
        except KeyboardInterrupt:  # the step subprocesses got the same SIGINT; record what finished
            interrupted = True
            collected.extend(events.read_events(str(events_path), offset)[0])
    if interrupted:
        error: str | None = "interrupted by the user"
    else:
        error = None if worker.error is None else _short_error(worker.error, collected)
    use_buffer_of(resolved)
    run_id = find_pipeline_run(resolved.tracking.uri or "", resolved.tracking.experiment, run_key)
    summary = build_summary(
        chosen.name, collected, chosen.steps, error, resolved.tracking.uri or "", run_id, plan.name, str(out_dir)
    )
    buffer = resolved.tracking.buffer_uri or ""
    pending = len(pending_records(buffer)) if buffer else 0
    summary["tracking"]["buffered_records"] = pending
    if pending:  # the server was unreachable for part of the run: say so, and how to catch up
        summary["tracking"]["buffer_uri"] = buffer
        summary["tracking"]["note"] = (
            f"tracking server unreachable: {pending} records buffered in {buffer}; "
            f"replay them with `rooivalk sync {out_dir}`"
        )
    summary["seconds"] = time.perf_counter() - started
    summary_path = out_dir / SUMMARY_FILE
    storage.write_text(summary_path, json.dumps(summary, indent=2, default=str))
    if summary["status"] == "succeeded":
        write_run_report(out_dir, summary, console)
    return RunOutcome(summary, summary_path)


def write_run_report(out_dir: Path, summary: dict[str, Any], console: Console) -> Path | None:
    """<out>/report.html (rooivalk.cli.report_html), logged beside the run on its MLflow parent run. The
    pipeline has finished by now: a report that cannot be rendered or logged is a warning naming why, never
    a failed run."""
    from rooivalk.cli.report_html import REPORT_HTML, write_html_report
    from rooivalk.tracking.runs import log_artifact

    try:
        path = write_html_report(out_dir)
    except Exception as error:  # whatever broke the report, the trained and exported models stand
        _warn(console, f"{out_dir / REPORT_HTML} not written: {type(error).__name__}: {error}")
        return None
    tracking = summary.get("tracking") or {}
    if tracking.get("uri") and tracking.get("run_id"):
        try:  # buffered like every tracking call: an unreachable server keeps it for `rooivalk sync`
            log_artifact(tracking["uri"], tracking["run_id"], str(path))
        except Exception as error:
            _warn(console, f"{path} not logged to MLflow run {tracking['run_id']}: {type(error).__name__}: {error}")
    console.print(f"report: {path}")
    return path


def _warn(console: Console, text: str) -> None:
    logging.getLogger(__name__).warning(text)
    console.print(f"[yellow]warning:[/] {text}")


def _short_error(error: BaseException, collected: list[dict[str, Any]]) -> str:
    """The failing step's own message beats kfp.local's generic 'task failed'."""
    for event in reversed(collected):
        if event.get("event") == "step_end" and event.get("status") == "failed":
            return f"step {event['step']} failed: {event.get('error')}"
    return f"{type(error).__name__}: {error}"
