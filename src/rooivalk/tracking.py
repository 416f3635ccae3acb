"""MLflow tracking: one parent run per pipeline run, a nested run per step, the model registry.

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
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from rooivalk import storage
from rooivalk.plan import Plan
from rooivalk.tracking_buffer import (
    BUFFER_ENV,
    OFFLINE_TAG,
    buffered,
    is_offline_id,
    new_offline_id,
    pending_records,
    reachable,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from rooivalk.promotion import Registration

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


@buffered("create_pipeline_run", _offline_run)
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


@buffered("open_step_run", _offline_run)
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


def log_onnx_bundle(tracking_uri: str, run_id: str, bundle_uri: str, name: str) -> None:
    """A deployment bundle's ONNX model under MLflow's onnx flavor (servable with `mlflow models serve`,
    registrable) plus the bundle's files, in the step's run. Not buffered: the bundle itself is already
    in storage, so an unreachable server costs the flavor copy only, with a warning. The server is
    probed first (as buffered calls do): MLflow's own client would retry a dead server with backoff
    for minutes (the suite's offline-run test took 320 s before this probe, 97 s after)."""
    from rooivalk.export.predictor import log_bundle_to_mlflow

    if is_offline_id(run_id) or not reachable(tracking_uri):
        log.warning(
            "tracking server %s unreachable: the %s ONNX model is not logged under MLflow's onnx flavor "
            "(the bundle itself is in storage at %s)",
            tracking_uri,
            name,
            bundle_uri,
        )
        return

    with tempfile.TemporaryDirectory(prefix="rooivalk-bundle-") as tmp:
        local = Path(bundle_uri)
        if storage.parse_uri(bundle_uri).is_s3:
            storage.copy_folder(bundle_uri, tmp)
            local = Path(tmp)
        try:
            mlflow.set_tracking_uri(tracking_uri)
            mlflow.start_run(run_id=run_id)
            try:
                log_bundle_to_mlflow(local, name)
            finally:
                mlflow.end_run()  # the step's own finish_run sets the final status afterwards
        except MlflowException as error:
            log.warning("could not log the %s ONNX model to MLflow at %s: %s", name, tracking_uri, error)


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


def pipeline_run_id(plan_dict: dict[str, Any], run_key: str) -> str:
    """The parent run of the pipeline run `run_key`, for tasks that cannot take it as an input
    (inside a ParallelFor, kfp.local replaces every task-output parameter with the loop item)."""
    plan = Plan.model_validate(plan_dict)
    use_buffer_of(plan)
    found = find_pipeline_run(required_uri(plan), plan.tracking.experiment, run_key)
    if found is None:
        raise LookupError(f"no pipeline run with key {run_key!r} in experiment {plan.tracking.experiment!r}")
    return found


def register_model(
    tracking_uri: str,
    run_id: str,
    model: Any,
    name: str,
    tags: dict[str, str],
    alias: str | None = None,
    extra_artifacts: dict[str, str] | None = None,
) -> tuple[str, str]:
    """Log the PyTorch model under the step run and register it; returns (name, version).

    Pickle serialization, not torch.export: an exported program freezes the example's batch size.
    """
    import mlflow.pytorch

    client_for(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(model, name="model", serialization_format="pickle", pip_requirements=[])
        for artifact_path, local_path in (extra_artifacts or {}).items():
            log_artifact(tracking_uri, run_id, local_path, artifact_path)
    version = mlflow.register_model(info.model_uri, name, tags=tags)
    if alias:
        MlflowClient(tracking_uri=tracking_uri).set_registered_model_alias(name, alias, str(version.version))
    return name, str(version.version)


def _register_candidate(
    tracking_uri: str,
    plan: Plan,
    run_id: str,
    parent_run_id: str,
    network: Any,
    dataset_version: str,
    extra_artifacts: dict[str, str],
    extra_tags: dict[str, str] | None = None,
    dataset_dir: str | None = None,
) -> Registration:
    """Register `network` under the plan's registry name with lineage tags (it passed the evaluation
    and export gates to get here), alias it `challenger`, and let rooivalk.promotion decide whether
    it becomes `champion` by the scores in its evaluation report (`extra_artifacts["evaluation"]`);
    with `dataset_dir`, a champion scored on another dataset version is re-scored on its test split."""
    from rooivalk.evaluation.rescore import champion_rescorer
    from rooivalk.promotion import Registration, promote_challenger, report_metrics

    tags = {
        **lineage_tags(plan, dataset_version),
        "rooivalk.status": "validated",
        "rooivalk.parent_run_id": parent_run_id,
        **(extra_tags or {}),
    }
    name = plan.tracking.registered_model or plan.name
    name, version = register_model(tracking_uri, run_id, network, name, tags, extra_artifacts=extra_artifacts)
    report = json.loads(Path(extra_artifacts["evaluation"], "evaluation.json").read_text())
    system = plan.fusion is not None
    default_metric = "fusion_test_accuracy" if system else "test_accuracy"
    spec = plan.tracking.promotion
    rescore = None
    if dataset_dir is not None:
        rescore = champion_rescorer(tracking_uri, plan, name, dataset_dir, spec.metric or default_metric, system)
    decision = promote_challenger(
        tracking_uri, name, version, report_metrics(report), dataset_version, spec, default_metric, rescore
    )
    return Registration(name, version, decision)


def _offline_registration(args: dict[str, Any]) -> Registration:
    from rooivalk.promotion import buffered_registration

    return buffered_registration(Plan.model_validate(args["plan_dict"]))


@buffered("register", _offline_registration)
def register(
    tracking_uri: str,
    plan_dict: dict[str, Any],
    run_id: str,
    parent_run_id: str,
    model_dir: str,
    dataset_version: str,
    extra_artifacts: dict[str, str],
    sensor_dirs: list[str] | None = None,
    dataset_dir: str | None = None,
) -> Registration:
    """Register a trained model, or with `sensor_dirs` a multi-sensor system (the fusion model at
    `model_dir` as the MLflow model, its sensor models as `sensors/<name>` artifacts, tagged with the
    features key and the sensor list); `extra_artifacts` (evaluation, ONNX export) go to the same run,
    and so does the model folder itself (`trained_model/`), which a later promotion re-scores on new
    data (`dataset_dir`: the test set of this registration). Folders, not objects, so that a
    registration buffered while the server is down can be replayed."""
    from rooivalk.evaluation.rescore import SENSORS_ARTIFACT, TRAINED_MODEL_ARTIFACT

    plan = Plan.model_validate(plan_dict)
    artifacts = {**extra_artifacts, TRAINED_MODEL_ARTIFACT: model_dir}
    if not sensor_dirs:
        from rooivalk.models import load_trained_model

        network, _ = load_trained_model(model_dir)
        return _register_candidate(
            tracking_uri, plan, run_id, parent_run_id, network, dataset_version, artifacts, dataset_dir=dataset_dir
        )
    from rooivalk.training.multisensor_artifacts import load_fusion_model, read_sensor_info

    fusion, info = load_fusion_model(model_dir)
    for folder in sensor_dirs:
        artifacts[f"{SENSORS_ARTIFACT}/{read_sensor_info(folder).sensor}"] = folder
    tags = {"rooivalk.features_key": info.features_key, "rooivalk.sensors": ",".join(fusion.sensors)}
    return _register_candidate(
        tracking_uri, plan, run_id, parent_run_id, fusion, dataset_version, artifacts, tags, dataset_dir
    )


_CREATES = ("create_pipeline_run", "open_step_run")


def replay(op: str, tracking_uri: str, args: dict[str, Any], offline_result: Any) -> Any:
    """Run one buffered call for real (rooivalk.tracking_buffer.sync). A run it creates is tagged
    with its offline id, and found by it instead of created again when the record is replayed twice."""
    functions: dict[str, Any] = {
        "create_pipeline_run": create_pipeline_run,
        "open_step_run": open_step_run,
        "log_metrics": log_metrics,
        "set_tags": set_tags,
        "log_artifact": log_artifact,
        "finish_run": finish_run,
        "close_pipeline_run": close_pipeline_run,
        "register": register,
    }
    if op not in functions:
        raise ValueError(f"unknown buffered tracking call {op!r}")
    if op in _CREATES:
        client = client_for(tracking_uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
        found = client.search_runs(experiments, filter_string=f"tags.`{OFFLINE_TAG}` = '{offline_result}'")
        if found:
            return str(found[0].info.run_id)
        args = {**args, "extra_tags": {**(args.get("extra_tags") or {}), OFFLINE_TAG: str(offline_result)}}
    return functions[op].__wrapped__(tracking_uri, **args)


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
