"""The model registry: log a model under a step's run, register it with lineage tags, alias it
`challenger`, and let rooivalk.tracking.promotion decide whether it becomes `champion`.

Tracking registers what it is handed: the caller loads the network (rooivalk.steps.registration) and,
for a champion scored on another dataset version, hands in the function that re-scores it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from rooivalk.plan import Plan
from rooivalk.tracking.promotion import Registration, RescoreUnavailable, promote_challenger, report_metrics
from rooivalk.tracking.runs import client_for, lineage_tags, log_artifact

# Artifact folders of a registration run: the trained model folder (re-scored by a later promotion)
# and, for a multi-sensor system, one folder per sensor model.
TRAINED_MODEL_ARTIFACT = "trained_model"
SENSORS_ARTIFACT = "sensors"


def register_model(
    tracking_uri: str,
    run_id: str,
    model: Any,
    name: str,
    tags: dict[str, str],
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
) -> Registration:
    """Register `network` under the plan's registry name with lineage tags (it passed the evaluation
    and export gates to get here), alias it `challenger`, and let promotion decide whether it becomes
    `champion` by the scores in its evaluation report (`extra_artifacts["evaluation"]`); `rescore`
    scores a champion of another dataset version on this registration's test split."""
    tags = {
        **lineage_tags(plan, dataset_version),
        "rooivalk.status": "validated",
        "rooivalk.parent_run_id": parent_run_id,
        **(extra_tags or {}),
    }
    name = plan.tracking.registered_model or plan.name
    name, version = register_model(tracking_uri, run_id, network, name, tags, extra_artifacts=extra_artifacts)
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
    )
    return Registration(name, version, decision)


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
