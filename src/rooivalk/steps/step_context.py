"""What every pipeline step does around its library call: tracking, timing, events, errors.

A KFP component body is `with pipeline_step(...) as step: result = library_call(...)`, then
`step.record(...)`. The context opens the step's nested MLflow run under the pipeline's parent run,
emits start/end events (rooivalk.events), times the step, and on failure marks the run FAILED and
records the error before re-raising, so nothing already saved is lost.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rooivalk import events, storage, tracking
from rooivalk.plan import Plan, validate_plan
from rooivalk.tracking.loggers import StepLoggers


@dataclass
class StepContext:
    plan: Plan
    step: str
    tracking_uri: str
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, dict[str, str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    loggers: StepLoggers = field(default_factory=lambda: StepLoggers([]))
    _emitter: events.StepEmitter | None = None

    def progress(self, event: dict[str, Any]) -> None:
        """Forward a library progress event; batch events are throttled."""
        if self._emitter is None:
            self._emitter = events.StepEmitter(self.step)
        self._emitter(event)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        tracking.log_metrics(self.tracking_uri, self.run_id, metrics, step)
        self.loggers.log(metrics, step)

    def close_loggers(self, parent_run_id: str) -> None:
        """The loggers' files to the step's MLflow run (`logs/`) and to tracking.log_uri, if any ran."""
        folder = self.loggers.close(self.plan.tracking.log_uri, parent_run_id, self.step)
        if folder is not None:
            tracking.log_artifact(self.tracking_uri, self.run_id, folder, "logs")  # copied in if buffered
            shutil.rmtree(folder, ignore_errors=True)

    def record(
        self, metrics: dict[str, float], artifacts: dict[str, str], log_files: list[str] | None = None, **extra: Any
    ) -> None:
        """Final metrics and artifacts ({name: local path or URI}, digested with sha256)."""
        self.metrics.update({k: float(v) for k, v in metrics.items()})
        for name, uri in artifacts.items():
            self.artifacts[name] = {"uri": str(uri), "sha256": storage.sha256_tree(uri)}
        self.extra.update(extra)
        self.log_metrics(self.metrics)
        tags = {f"rooivalk.artifact.{name}": f"{a['uri']}@sha256:{a['sha256']}" for name, a in self.artifacts.items()}
        tracking.set_tags(self.tracking_uri, self.run_id, tags)
        for path in log_files or []:
            if Path(path).exists():
                tracking.log_artifact(self.tracking_uri, self.run_id, path)

    def log_onnx_bundles(self, bundles: dict[str, str]) -> None:
        """Each deployment bundle ({model name: folder or URI}) under MLflow's onnx flavor in this step's run."""
        # Here, not at the top: every step imports this module, and rooivalk.export loads torch and
        # onnxruntime (about 2 s), which only the export steps need.
        from rooivalk.export.mlflow_onnx import log_onnx_bundle

        for name, uri in bundles.items():
            log_onnx_bundle(self.tracking_uri, self.run_id, uri, name)


def _plugin_task_info(family: str) -> tuple[str, bool]:
    from rooivalk.training.tasks import plugin_task_info

    return plugin_task_info(family)


def _cuda_device() -> str | None:
    """The CUDA device the step ran on, when it used torch with a GPU (a step that never imported torch
    is not made to import it)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return str(torch.cuda.get_device_name(torch.cuda.current_device()))


@contextmanager
def pipeline_step(step: str, plan_dict: dict[str, Any], parent_run_id: str) -> Iterator[StepContext]:
    # The techniques check too (no key silently ignored), plugin families included.
    plan = validate_plan(plan_dict, origin=f"step {step}", resolver=_plugin_task_info)
    tracking_uri = tracking.required_uri(plan)
    tracking.use_buffer_of(plan)
    run_id = tracking.open_step_run(tracking_uri, parent_run_id, step)
    os.environ[events.STEP_ENV] = step  # processes the step launches (torchrun workers) report as it
    context = StepContext(plan, step, tracking_uri, run_id, loggers=StepLoggers(list(plan.tracking.loggers)))
    events.emit({"event": "step_start", "step": step, "run_id": run_id})
    started = time.perf_counter()
    try:
        yield context
    except BaseException as error:
        seconds = time.perf_counter() - started
        message = f"{type(error).__name__}: {error}"
        events.emit(
            {
                "event": "step_end",
                "step": step,
                "status": "failed",
                "seconds": seconds,
                "error": message,
                "metrics": context.metrics,
                "artifacts": context.artifacts,
                **context.extra,
            }
        )
        tracking.set_tags(tracking_uri, run_id, {"rooivalk.error": message[:5000]})
        context.close_loggers(parent_run_id)  # what a failed step logged is kept too
        tracking.finish_run(tracking_uri, run_id, failed=True)
        raise
    seconds = time.perf_counter() - started
    tracking.log_metrics(tracking_uri, run_id, {"step_seconds": seconds})
    gpu = _cuda_device()
    if gpu is not None:  # what the model version record names as the training GPU
        tracking.set_tags(tracking_uri, run_id, {"rooivalk.gpu": gpu})
    context.close_loggers(parent_run_id)
    tracking.finish_run(tracking_uri, run_id, failed=False)
    events.emit(
        {
            "event": "step_end",
            "step": step,
            "status": "succeeded",
            "seconds": seconds,
            "metrics": context.metrics,
            "artifacts": context.artifacts,
            **context.extra,
        }
    )
