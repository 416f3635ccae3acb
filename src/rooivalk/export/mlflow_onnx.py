"""Deployment bundles in MLflow: the ONNX model under MLflow's onnx flavor (servable with
`mlflow models serve`, registrable) plus the bundle's files, in a step's run."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from rooivalk import storage
from rooivalk.export.bundle import MODEL_FILE, BundleError, read_bundle_info
from rooivalk.tracking.buffer import is_offline_id, reachable

log = logging.getLogger(__name__)


def log_bundle_to_mlflow(bundle_dir: Path, name: str) -> Any:
    """Inside an active MLflow run: the ONNX model under the onnx flavor (so MLflow can serve and
    register it) and the whole bundle as artifacts under `<name>-bundle`. Returns mlflow's ModelInfo
    (register with its `model_uri`)."""
    import mlflow.onnx
    import onnx

    if mlflow.active_run() is None:
        raise BundleError(f"{bundle_dir}: log_bundle_to_mlflow needs an active MLflow run")
    info = read_bundle_info(str(bundle_dir))
    model_path = Path(bundle_dir) / MODEL_FILE
    storage.read_bytes(model_path, sha256=info.files[MODEL_FILE])  # log only what bundle.json vouches for
    model_info = mlflow.onnx.log_model(onnx.load(str(model_path)), name=name)
    mlflow.log_artifacts(str(bundle_dir), artifact_path=f"{name}-bundle")
    return model_info


def log_onnx_bundle(tracking_uri: str, run_id: str, bundle_uri: str, name: str) -> None:
    """A deployment bundle's ONNX model under MLflow's onnx flavor (servable with `mlflow models serve`,
    registrable) plus the bundle's files, in the step's run. Not buffered: the bundle itself is already
    in storage, so an unreachable server costs the flavor copy only, with a warning. The server is
    probed first (as buffered calls do): MLflow's own client would retry a dead server with backoff
    for minutes (the suite's offline-run test took 320 s before this probe, 97 s after)."""
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
