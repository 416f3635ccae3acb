"""Retraining on new data: the plan a retraining run trains with, and the monitoring reference it
refreshes when its challenger becomes champion.

The retraining pipeline (pipelines/retraining.py) is the plan's training pipeline behind one step,
`prepare_retraining`, which points the plan at the new data and, with `retraining.warm_start`, at the
champion's weights. Promotion already compares challenger and champion on the challenger's test set
(rooivalk.evaluation.rescore); the register step then calls `refresh_reference` so the drift monitor
compares production data with the data the serving model was validated on.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from rooivalk import storage
from rooivalk.plan import Plan

# Producers upload a dataset folder, then this empty object: the bucket EventSource filters on it, so a
# half-uploaded folder never starts a run, and the folder holding it becomes the plan's data source.
READY_MARKER = "_READY"


@dataclass(frozen=True)
class PreparedRetraining:
    plan: Plan
    source: str
    warm_started_from: str | None  # "<registered model>/<version>" of the champion, or None

    def summary(self) -> str:
        start = f"warm start from {self.warm_started_from}" if self.warm_started_from else "no warm start"
        return f"data {self.source}; {start}"


def retraining_source(data_uri: str, plan: Plan) -> str:
    """The dataset folder a retraining run ingests: the folder of a `_READY` marker object, the given
    folder URI itself, or (empty) the plan's own data source."""
    uri = data_uri.strip()
    if not uri:
        return plan.data.source
    uri = uri.rstrip("/")
    if uri.rsplit("/", 1)[-1] == READY_MARKER:
        uri = uri.rsplit("/", 1)[0]
    if "/" not in uri.removeprefix("s3://"):
        raise ValueError(f"data_uri {data_uri!r}: names a bucket, not a dataset folder inside it")
    return uri


def prepare_retraining(
    plan: Plan, data_uri: str, champion_dir: str | None, champion_uri: str | None = None
) -> PreparedRetraining:
    """The plan pointed at the new data; with `champion_dir` (the champion's `trained_model/` folder,
    downloaded here), its weights become the model's starting point, read by the train step from
    `champion_uri` (where the pipeline stores that folder; default: champion_dir itself)."""
    source = retraining_source(data_uri, plan)
    update: dict[str, object] = {"data": plan.data.model_copy(update={"source": source})}
    warm_started_from = None
    if champion_dir is not None:
        from rooivalk.models import read_model_info
        from rooivalk.models.artifact import WEIGHTS_FILE

        info = read_model_info(champion_dir)
        model = plan.single_model
        if (info.spec.family, info.spec.architecture) != (model.family, model.architecture):
            raise ValueError(
                f"retraining.warm_start: the champion is {info.spec.family}/{info.spec.architecture}, the plan "
                f"trains {model.family}/{model.architecture}; turn warm_start off to train the new architecture"
            )
        weights = f"{(champion_uri or champion_dir).rstrip('/')}/{WEIGHTS_FILE}"
        update["model"] = model.model_copy(update={"pretrained": weights})
        warm_started_from = _champion_ref(champion_dir)
    return PreparedRetraining(plan.model_copy(update=update), source, warm_started_from)


def _champion_ref(champion_dir: str) -> str:
    marker = Path(champion_dir) / "registered.txt"
    return marker.read_text().strip() if marker.exists() else champion_dir


def download_champion(tracking_uri: str, plan: Plan, dest_dir: str) -> str | None:
    """Download the registry champion's `trained_model/` into `dest_dir`; None when there is no champion
    yet (the first retraining trains from the plan's own starting point)."""
    from mlflow import MlflowClient

    from rooivalk.tracking.promotion import champion_version
    from rooivalk.tracking.registry import TRAINED_MODEL_ARTIFACT, download_run_artifact

    name = plan.tracking.registered_model or plan.name
    champion = champion_version(MlflowClient(tracking_uri=tracking_uri), name)
    if champion is None:
        return None
    with tempfile.TemporaryDirectory(prefix="rooivalk-champion-") as scratch:
        local = download_run_artifact(tracking_uri, champion.run_id, TRAINED_MODEL_ARTIFACT, scratch)
        storage.copy_folder(local, dest_dir)
    storage.write_text(f"{dest_dir}/registered.txt", f"{name}/{champion.version}\n")
    return dest_dir


def prepare_retraining_step(plan: Plan, data_uri: str, champion_dir: str, champion_uri: str) -> PreparedRetraining:
    """The pipeline's prepare step: with retraining.warm_start, the champion downloaded into
    `champion_dir` (the step's output, which later steps read at `champion_uri`), then the plan prepared."""
    from rooivalk.tracking import required_uri

    downloaded = download_champion(required_uri(plan), plan, champion_dir) if plan.retraining.warm_start else None
    return prepare_retraining(plan, data_uri, downloaded, champion_uri)


def refresh_reference(plan: Plan, report_dir: str, promoted: bool) -> str | None:
    """Copy the evaluation's reference profile (`<report>/reference`) to `monitoring.reference_uri` when
    the model it describes became champion; returns the URI written, or None (not promoted, no target,
    or no profile in the report)."""
    target = plan.monitoring.reference_uri
    source = f"{report_dir.rstrip('/')}/reference"
    if not (promoted and target) or not storage.exists(f"{source}/profile.json"):
        return None
    storage.copy_folder(source, target, last="profile.json")
    return target
