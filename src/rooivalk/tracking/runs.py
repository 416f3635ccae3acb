"""MLflow runs: one parent run per pipeline run, a nested run per step, lineage tags.

Runs are created with MlflowClient rather than `mlflow.start_run` because the parent run is opened
by one process (the first pipeline step) and closed by another (the exit handler): its status must
stay RUNNING in between, which the fluent API's context managers do not allow.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from rooivalk.plan import Plan
from rooivalk.tracking.buffer import BUFFER_ENV, buffered, new_offline_id, pending_records

log = logging.getLogger(__name__)

RUN_KEY_TAG = "rooivalk.run_key"
STEP_TAG = "rooivalk.step"
PARENT_TAG = "mlflow.parentRunId"
_PACKAGES = ("rooivalk", "torch", "timm", "kfp", "mlflow", "onnx", "onnxruntime", "numpy")
_MAX_PARAM_LENGTH = 6000


def default_tracking_uri(out_dir: str | Path) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / 'mlflow.db'}"


def client_for(uri: str) -> MlflowClient:
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def _artifact_location(uri: str) -> str | None:
    # With a sqlite store and no server, artifacts go next to the database (not the process cwd).
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return None


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    return str(client.create_experiment(name, artifact_location=_artifact_location(uri)))


def git_commit() -> str:
    if os.environ.get("ROOIVALK_GIT_COMMIT"):
        return os.environ["ROOIVALK_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested plan dict -> {"training.stages.0.epochs": "1", ...} for MLflow params."""
    if isinstance(data, dict):
        items: dict[str, str] = {}
        for key, value in data.items():
            items.update(flatten(value, f"{prefix}{key}."))
        return items
    if isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        items = {}
        for index, value in enumerate(data):
            items.update(flatten(value, f"{prefix}{index}."))
        return items
    return {prefix.rstrip("."): json.dumps(data) if not isinstance(data, str) else data}


def lineage_tags(plan: Plan, dataset_version: str | None = None) -> dict[str, str]:
    tags = {"rooivalk.plan_digest": plan.digest(), "rooivalk.git_commit": git_commit(), "rooivalk.plan_name": plan.name}
    tags.update({f"rooivalk.version.{k}": v for k, v in package_versions().items()})
    if dataset_version:
        tags["rooivalk.dataset_version"] = dataset_version
    return tags


def use_buffer_of(plan: Plan) -> None:
    """Point this process's tracking buffer at the plan's (where records go if the server is down)."""
    if plan.tracking.buffer_uri:
        os.environ[BUFFER_ENV] = plan.tracking.buffer_uri


def open_pipeline_run(plan: Plan, run_key: str, pipeline: str) -> str:
    """Create the parent run (RUNNING), log the resolved plan as params and as plan.json."""
    use_buffer_of(plan)
    return create_pipeline_run(required_uri(plan), plan.model_dump(mode="json"), run_key, pipeline)


def _offline_run(_args: dict[str, Any]) -> str:
    return new_offline_id()


@buffered("create_pipeline_run", _offline_run, creates_run=True)
def create_pipeline_run(
    tracking_uri: str, plan_dict: dict[str, Any], run_key: str, pipeline: str, extra_tags: dict[str, str] | None = None
) -> str:
    plan = Plan.model_validate(plan_dict)
    client = client_for(tracking_uri)
    experiment_id = ensure_experiment(client, plan.tracking.experiment, tracking_uri)
    tags = {RUN_KEY_TAG: run_key, "rooivalk.pipeline": pipeline, **lineage_tags(plan), **(extra_tags or {})}
    run = client.create_run(experiment_id, run_name=f"{plan.name}-{run_key[:8]}", tags=tags)
    params = [Param(k, v[:_MAX_PARAM_LENGTH]) for k, v in flatten(plan_dict).items()]
    for start in range(0, len(params), 100):  # MLflow caps a batch at 100 params
        client.log_batch(run.info.run_id, params=params[start : start + 100])
    client.log_dict(run.info.run_id, plan_dict, "plan.json")
    return str(run.info.run_id)


@buffered("open_step_run", _offline_run, creates_run=True)
def open_step_run(tracking_uri: str, parent_run_id: str, step: str, extra_tags: dict[str, str] | None = None) -> str:
    client = client_for(tracking_uri)
    parent = client.get_run(parent_run_id)
    tags = {PARENT_TAG: parent_run_id, STEP_TAG: step, RUN_KEY_TAG: parent.data.tags.get(RUN_KEY_TAG, "")}
    tags.update(extra_tags or {})
    run = client.create_run(parent.info.experiment_id, run_name=step, tags=tags)
    return str(run.info.run_id)


def _nothing(_args: dict[str, Any]) -> None:
    return None


@buffered("log_metrics", _nothing)
def log_metrics(tracking_uri: str, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    import time

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    client = client_for(tracking_uri)
    for start in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[start : start + 1000])


@buffered("set_tags", _nothing)
def set_tags(tracking_uri: str, run_id: str, tags: dict[str, str]) -> None:
    client_for(tracking_uri).log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


@buffered("log_artifact", _nothing, file_args=("path",))
def log_artifact(tracking_uri: str, run_id: str, path: str, artifact_path: str | None = None) -> None:
    client = client_for(tracking_uri)
    if Path(path).is_dir():
        client.log_artifacts(run_id, path, artifact_path)
    else:
        client.log_artifact(run_id, path, artifact_path)


@buffered("finish_run", _nothing)
def finish_run(tracking_uri: str, run_id: str, failed: bool) -> None:
    client_for(tracking_uri).set_terminated(run_id, "FAILED" if failed else "FINISHED")


@buffered("close_pipeline_run", lambda _args: "BUFFERED")
def close_pipeline_run(tracking_uri: str, parent_run_id: str, expected_steps: list[str]) -> str:
    """Finish the parent run: FINISHED only if every expected step's nested run finished."""
    client = client_for(tracking_uri)
    parent = client.get_run(parent_run_id)
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'")
    finished = {run.data.tags.get(STEP_TAG) for run in children if run.info.status == "FINISHED"}
    status = "FINISHED" if all(step in finished for step in expected_steps) else "FAILED"
    client.set_terminated(parent_run_id, status)
    return status


def _offline_pipeline_run(args: dict[str, Any]) -> str | None:
    """A pipeline run created offline in this buffer, found by its run key."""
    buffer = os.environ.get(BUFFER_ENV)
    for item in pending_records(buffer) if buffer else []:
        if item["op"] == "create_pipeline_run" and item["args"]["run_key"] == args["run_key"]:
            return str(item["result"])
    return None


@buffered("find_pipeline_run", _offline_pipeline_run, writes=False)
def find_pipeline_run(tracking_uri: str, experiment: str, run_key: str) -> str | None:
    client = client_for(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}' and tags.`rooivalk.pipeline` != ''"
    )
    return str(runs[0].info.run_id) if runs else None


@buffered("run_tags", lambda args: None, writes=False)
def run_tags(tracking_uri: str, run_id: str) -> dict[str, str] | None:
    """A run's tags; None where the server does not answer (one /health probe: asked of a server that is
    down, MLflow retries for minutes) or the run was buffered offline and not synced yet."""
    return dict(client_for(tracking_uri).get_run(run_id).data.tags)


def pipeline_run_id(plan_dict: dict[str, Any], run_key: str) -> str:
    """The parent run of the pipeline run `run_key`, for tasks that cannot take it as an input
    (inside a ParallelFor, kfp.local replaces every task-output parameter with the loop item)."""
    plan = Plan.model_validate(plan_dict)
    use_buffer_of(plan)
    found = find_pipeline_run(required_uri(plan), plan.tracking.experiment, run_key)
    if found is None:
        raise LookupError(f"no pipeline run with key {run_key!r} in experiment {plan.tracking.experiment!r}")
    return found


def close_pipeline_run_by_key(plan: Plan, run_key: str, expected_steps: list[str]) -> str:
    """The exit handler's job: it may not depend on other tasks, so it finds the parent run by key."""
    uri = required_uri(plan)
    use_buffer_of(plan)
    parent_run_id = find_pipeline_run(uri, plan.tracking.experiment, run_key)
    return "NOT_STARTED" if parent_run_id is None else close_pipeline_run(uri, parent_run_id, expected_steps)


def required_uri(plan: Plan) -> str:
    if not plan.tracking.uri:
        raise ValueError("tracking.uri must be resolved before a pipeline runs (rooivalk run/compile do this)")
    return plan.tracking.uri
