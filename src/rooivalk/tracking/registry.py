"""The model registry: log a model under a step's run, register it with lineage tags, alias it
`challenger`, and let rooivalk.tracking.promotion decide whether it becomes `champion`.

Tracking registers what it is handed: the caller loads the network (rooivalk.steps.registration) and,
for a champion scored on another dataset version, hands in the function that re-scores it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from rooivalk.plan import Plan
from rooivalk.tracking import lifecycle
from rooivalk.tracking.model_record import RECORD_FILE, build_record, describe, onnx_signature, record_tags
from rooivalk.tracking.promotion import (
    DECISION_TAG,
    Registration,
    RescoreUnavailable,
    champion_version,
    promote_challenger,
    report_metrics,
)
from rooivalk.tracking.runs import client_for, lineage_tags, log_artifact
from rooivalk.tracking.trace import model_versions

# Artifact folders of a registration run: the trained model folder (re-scored by a later promotion)
# and, for a multi-sensor system, one folder per sensor model.
TRAINED_MODEL_ARTIFACT = "trained_model"
PARENT_RUN_TAG = "rooivalk.parent_run_id"  # a version's pipeline run: a retried registration finds its leftovers
SENSORS_ARTIFACT = "sensors"


def register_model(
    tracking_uri: str,
    run_id: str,
    model: Any,
    name: str,
    tags: dict[str, str],
    extra_artifacts: dict[str, str] | None = None,
    signature: Any | None = None,
) -> tuple[str, str]:
    """Log the PyTorch model under the step run (with its input/output `signature`) and register it;
    returns (name, version).

    Pickle serialization, not torch.export: an exported program freezes the example's batch size.
    """
    import mlflow.pytorch

    client_for(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            model, name="model", serialization_format="pickle", pip_requirements=[], signature=signature
        )
        for artifact_path, local_path in (extra_artifacts or {}).items():
            log_artifact(tracking_uri, run_id, local_path, artifact_path)
    version = mlflow.register_model(info.model_uri, name, tags=tags)
    return name, str(version.version)


def register_candidate(
    tracking_uri: str,
    plan: Plan,
    run_id: str,
    parent_run_id: str,
    network: Any,
    dataset_version: str,
    extra_artifacts: dict[str, str],
    extra_tags: dict[str, str] | None = None,
    rescore: Callable[[str], float] | None = None,
    model_name: str = "model",
    own_steps: Sequence[str] | None = None,
) -> Registration:
    """Register `network` under the plan's registry name with lineage tags (it passed the evaluation
    and export gates to get here) and its record (rooivalk.tracking.model_record), move its status
    draft -> training -> validated (when every requirement passed; rooivalk.tracking.lifecycle), alias it
    `challenger`, and let promotion decide whether it becomes `champion` by the scores in its evaluation
    report (`extra_artifacts["evaluation"]`); `rescore` scores a champion of another dataset version on this
    registration's test split. `model_name`: the export's name of the network (its ONNX graph gives the
    version's signature); `own_steps`: the pipeline steps that made this model, when not all of them did
    (the attribution model of a multi-sensor run: its own step). A version that did not pass every
    requirement stays challenger. A version an earlier attempt of this step left unfinished (a retried
    pod) is deprecated first, naming this one's registration."""
    tags = {
        **lineage_tags(plan, dataset_version),
        PARENT_RUN_TAG: parent_run_id,
        **(extra_tags or {}),
    }
    name = plan.tracking.registered_model or plan.name
    client = client_for(tracking_uri)
    champion = champion_version(client, name)
    previous = None if champion is None else str(champion.version)
    signature = onnx_signature(extra_artifacts.get("onnx"), model_name)
    by = f"rooivalk (pipeline run {parent_run_id})"
    unfinished = _unfinished_versions(client, name, parent_run_id)
    name, version = register_model(tracking_uri, run_id, network, name, tags, extra_artifacts, signature)
    for left in unfinished:
        lifecycle.move(client, name, left, "deprecated", by, f"registration retried: version {version} replaces it")
    lifecycle.move(client, name, version, "draft", by, "registered")
    record = build_record(
        client, plan, name, version, run_id, parent_run_id, dataset_version, extra_artifacts, previous, own_steps
    )
    for key, value in record_tags(record).items():
        client.set_model_version_tag(name, version, key, value)
    lifecycle.move(client, name, version, "training", by, "trained; record written")
    if record["requirements_passed"]:
        lifecycle.move(client, name, version, "validated", by, "every requirement passed")
    report = json.loads(Path(extra_artifacts["evaluation"], "evaluation.json").read_text())
    decision = promote_challenger(
        tracking_uri,
        name,
        version,
        report_metrics(report),
        dataset_version,
        plan.tracking.promotion,
        promotion_metric(plan),
        rescore,
        None if record["requirements_passed"] else f"not validated: {_failed_requirements(record)}",
    )
    record["promotion"] = decision.reason
    refresh_record(client, name, version, record)
    return Registration(name, version, decision)


def _unfinished_versions(client: Any, name: str, parent_run_id: str) -> list[str]:
    """Versions of `name` an earlier attempt of this pipeline run's registration left in draft or training
    with no promotion decision (its pod died mid-way)."""
    found = model_versions(client, name, PARENT_RUN_TAG, parent_run_id)  # none yet for a new name
    return [
        str(v.version) for v in found if lifecycle.status_of(v) in ("draft", "training") and DECISION_TAG not in v.tags
    ]


def _failed_requirements(record: dict[str, Any]) -> str:
    """`CD-ML-004 failed, CD-ML-005 not measured`."""
    said = {False: "failed", None: "not measured"}
    return ", ".join(
        f"{r['id']} {said[r['passed']]}" for r in record["traceability"]["requirements"] if r["passed"] is not True
    )


def refresh_record(
    client: Any, name: str, version: str, record: dict[str, Any] | None = None, promotion: str | None = None
) -> dict[str, Any]:
    """Write the version's record again with its current status, history and approval (into the
    registration run's model_record.json) and its MLflow description (`promotion`: what promotion now
    says of it); returns the record."""
    found = client.get_model_version(name, version)
    if record is None:
        record = read_record(client, found)
    if promotion is not None:
        record["promotion"] = promotion
    record["status"] = lifecycle.status_of(found)
    record["status_history"] = lifecycle.history_of(found)
    by, at, note = (found.tags.get(tag) for tag in lifecycle.APPROVAL_TAGS)
    record["approval"] = None if by is None else {"by": by, "at": at, "note": note or ""}
    client.log_dict(found.run_id, record, RECORD_FILE)
    client.update_model_version(name, version, description=describe(record, record.get("promotion")))
    return record


def read_record(client: Any, version: Any) -> dict[str, Any]:
    """The record a version's registration run holds (model_record.json)."""
    import mlflow.artifacts

    uri = f"runs:/{version.run_id}/{RECORD_FILE}"
    try:
        text = mlflow.artifacts.load_text(uri)
    except (MlflowException, OSError) as error:
        raise lifecycle.LifecycleError(
            f"{version.name} version {version.version} has no {RECORD_FILE} (registered before model records?): {error}"
        ) from error
    return dict(json.loads(text))


def promotion_metric(plan: Plan) -> str:
    """The test metric promotion compares: the plan's, or test accuracy of the model or the fusion (a
    detector's test mAP@0.5)."""
    default = "fusion_test_accuracy" if plan.fusion is not None else "test_accuracy"
    if plan.model is not None and plan.model.family == "detector":
        default = "test_map50"
    return plan.tracking.promotion.metric or default


def download_run_artifact(tracking_uri: str, run_id: str, artifact_path: str, dest: str) -> Path:
    """A run's artifact folder downloaded below `dest`; RescoreUnavailable when the run has none."""
    import mlflow.artifacts

    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=dest, tracking_uri=tracking_uri
        )
    except (MlflowException, OSError) as error:
        raise RescoreUnavailable(f"its run {run_id} has no {artifact_path!r} artifact ({error})") from error
    return Path(local)
