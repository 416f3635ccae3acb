"""`rooivalk demo-s3` (`make demo-s3`): the flagship plan against real servers on loopback, as on a
cluster: its data source, checkpoints and feature cache in S3 (moto's server), tracking and the
registry on an `mlflow server` whose artifacts live in that S3."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from rooivalk import storage
from rooivalk._dev.servers import LOCAL_S3_CREDENTIALS, create_buckets, start_mlflow, start_moto
from rooivalk.plan import Plan

BUCKET = "rooivalk-demo"
ARTIFACT_BUCKET = "mlflow-artifacts"


def s3_plan(plan: Plan, tracking_uri: str) -> Plan:
    """The plan with every URI it writes or reads moved to the demo bucket."""
    prefix = f"s3://{BUCKET}/{plan.name}"
    data = plan.data.model_copy(update={"source": f"{prefix}/source"})
    checkpoint = plan.training.checkpoint.model_copy(update={"uri": f"{prefix}/checkpoints"})
    training = plan.training.model_copy(update={"checkpoint": checkpoint})
    fusion = plan.fusion and plan.fusion.model_copy(update={"cache_uri": f"{prefix}/feature-cache"})
    tracking = plan.tracking.model_copy(update={"uri": tracking_uri, "buffer_uri": f"{prefix}/tracking-buffer"})
    return plan.model_copy(update={"data": data, "training": training, "fusion": fusion, "tracking": tracking})


def upload_source(local_source: str, target: str, console: Console) -> int:
    """Copy a local source folder into S3 (a simulated source is simulated straight into S3 instead)."""
    root = Path(local_source)
    files = [p for p in sorted(root.rglob("*")) if p.is_file()] if root.is_dir() else []
    for path in files:
        storage.write_bytes(f"{target}/{path.relative_to(root).as_posix()}", path.read_bytes())
    console.print(f"uploaded {len(files)} files of {local_source} to {target}")
    return len(files)


def run_demo_s3(plan: Plan, out_dir: Path, console: Console, keep_running: bool) -> int:
    import os

    from rooivalk.cli.local_run import run_local

    logs = out_dir / "servers"
    moto = start_moto(logs / "moto.log")
    mlflow = None
    try:
        os.environ.update({**LOCAL_S3_CREDENTIALS, "AWS_ENDPOINT_URL_S3": moto.url})  # inherited by the steps
        create_buckets(moto.url, BUCKET, ARTIFACT_BUCKET)
        mlflow = start_mlflow(out_dir / "mlflow.db", f"s3://{ARTIFACT_BUCKET}/", moto.url, logs / "mlflow.log")
        console.print(
            f"S3 (moto) at {moto.url}; MLflow server at [bold]{mlflow.url}[/] (artifacts in s3://{ARTIFACT_BUCKET})"
        )
        moved = s3_plan(plan, mlflow.url)
        if storage.exists(plan.data.source):
            upload_source(plan.data.source, moved.data.source, console)
        outcome = run_local(moved, out_dir, console)
        stored = storage.list_uris(f"s3://{BUCKET}")
        console.print(f"pipeline {outcome.summary['status']}; summary: {outcome.summary_path}")
        console.print(f"s3://{BUCKET}: {len(stored)} objects, e.g. " + ", ".join(stored[:3]))
        console.print(f"MLflow UI: [bold]{mlflow.url}[/] (experiment {moved.tracking.experiment!r})")
        if keep_running:
            console.print("servers stay up for a look; Ctrl-C stops them")
            while True:
                time.sleep(1)
        return 0 if outcome.summary["status"] == "succeeded" else 1
    except KeyboardInterrupt:
        return 0
    finally:
        if mlflow is not None:
            mlflow.stop()
        moto.stop()
