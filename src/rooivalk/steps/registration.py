"""The register step: load what training wrote and hand it to the registry (rooivalk.tracking.registry).

Buffered as the op `register` while the tracking server is down: its arguments are folders, not
objects, so `rooivalk sync` replays it later (which is why `rooivalk sync` imports this module).
"""

from __future__ import annotations

from typing import Any

from rooivalk.plan import Plan
from rooivalk.tracking.buffer import buffered
from rooivalk.tracking.promotion import Registration, buffered_registration
from rooivalk.tracking.registry import SENSORS_ARTIFACT, TRAINED_MODEL_ARTIFACT, promotion_metric, register_candidate

XGBOOST_ARTIFACT = "xgboost_model"  # the ensemble's XGBoost member in the registration run


def log_ensemble_member(tracking_uri: str, run_id: str, model_dir: str) -> dict[str, str]:
    """With an ensemble, log its XGBoost member in the registration run under MLflow's xgboost flavor
    (`xgboost_model`) and return the tags that give the weights and its model URI (load it with
    mlflow.xgboost.load_model); the registered version's own model is the plan's mlp, the bundle ships both."""
    import json

    import mlflow

    from rooivalk.models.array_artifact import is_array_model, load_xgboost_member, read_array_model_info
    from rooivalk.tracking.runs import client_for
    from rooivalk.training.xgboost_mlflow import log_xgboost_model

    if not is_array_model(model_dir):
        return {}
    info = read_array_model_info(model_dir)
    if info.ensemble is None:
        return {}
    client_for(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        logged = log_xgboost_model(load_xgboost_member(model_dir, info), XGBOOST_ARTIFACT)
    return {"rooivalk.ensemble": json.dumps(info.ensemble.weights), "rooivalk.ensemble_xgboost": logged.model_uri}


def variant_ensemble_tags(model_dir: str) -> dict[str, str]:
    """A variant ensemble's registered version is the whole ensemble (one VariantEnsemble network, every
    member inside): tags give each member's overrides, weight and lineage (its plan digest and weights
    digest); `trained_model/members/<k>` holds each member's own folder."""
    import json

    from rooivalk.models.array_artifact import is_array_model, read_array_model_info
    from rooivalk.models.artifact import read_model_info
    from rooivalk.models.detector_artifact import is_detector_model

    if is_detector_model(model_dir):
        return {}
    variants = (read_array_model_info if is_array_model(model_dir) else read_model_info)(model_dir).variants
    if variants is None:
        return {}
    members = [member.model_dump(mode="json") for member in variants]
    return {
        "rooivalk.variants": json.dumps(members, separators=(",", ":")),
        "rooivalk.variants_note": "the registered model averages every member; trained_model/members/<k> holds each",
    }


def detector_ensemble_tags(model_dir: str) -> dict[str, str]:
    """A detector ensemble's registered version is member 0's network (the pytorch flavor holds one
    module): tags say so, with the members and fusion settings; `trained_model/` holds every member and
    the export's bundle fuses them."""
    from rooivalk.models.detector_artifact import is_detector_model, read_detector_info

    if not is_detector_model(model_dir):
        return {}
    ensemble = read_detector_info(model_dir).detector.ensemble
    if ensemble is None:
        return {}
    return {
        "rooivalk.detector_ensemble": ensemble.model_dump_json(),
        "rooivalk.detector_ensemble_note": "the registered model is member 0; trained_model/members/ holds the rest",
    }


def _offline_registration(args: dict[str, Any]) -> Registration:
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
    own_steps: list[str] | None = None,
) -> Registration:
    """Register a trained model, or with `sensor_dirs` a multi-sensor system (the fusion model at
    `model_dir` as the MLflow model, its sensor models as `sensors/<name>` artifacts, tagged with the
    features key and the sensor list); `extra_artifacts` (evaluation, ONNX export) go to the same run,
    and so does the model folder itself (`trained_model/`), which a later promotion re-scores on new
    data (`dataset_dir`: the test set of this registration); `own_steps`: the pipeline steps that made
    this model when not all did (its version record reads only theirs). Folders, not objects, so that a
    registration buffered while the server is down can be replayed."""
    # Here, not at the top: `rooivalk sync` imports this module for the op, and these load torch.
    from rooivalk.evaluation.rescore import champion_rescorer
    from rooivalk.models.array_artifact import load_any_model
    from rooivalk.models.fusion_artifacts import load_fusion_model
    from rooivalk.models.sensor_artifacts import read_sensor_info

    plan = Plan.model_validate(plan_dict)
    artifacts = {**extra_artifacts, TRAINED_MODEL_ARTIFACT: model_dir}
    rescore = None
    if dataset_dir is not None:
        name = plan.tracking.registered_model or plan.name
        system = plan.fusion is not None
        rescore = champion_rescorer(tracking_uri, plan, name, dataset_dir, promotion_metric(plan), system)
    if not sensor_dirs:
        network = load_any_model(model_dir)  # an image model, or a sequence or table plan's rnn or mlp
        tags = log_ensemble_member(tracking_uri, run_id, model_dir) | detector_ensemble_tags(model_dir)
        tags |= variant_ensemble_tags(model_dir)
        return register_candidate(
            tracking_uri, plan, run_id, parent_run_id, network, dataset_version, artifacts, tags, rescore,
            own_steps=own_steps,
        )  # fmt: skip
    fusion, info = load_fusion_model(model_dir)
    for folder in sensor_dirs:
        artifacts[f"{SENSORS_ARTIFACT}/{read_sensor_info(folder).sensor}"] = folder
    tags = {"rooivalk.features_key": info.features_key, "rooivalk.sensors": ",".join(fusion.sensors)}
    return register_candidate(
        tracking_uri, plan, run_id, parent_run_id, fusion, dataset_version, artifacts, tags, rescore, "fusion"
    )
