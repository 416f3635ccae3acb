"""The training pipeline: ingest -> train -> evaluate -> export -> register, inside one MLflow run."""

from collections.abc import Callable
from typing import Any

from kfp import dsl

from rooivalk.plan import ClusterSpec
from rooivalk_kfp.components.evaluate_model import evaluate_model
from rooivalk_kfp.components.export_model import export_model
from rooivalk_kfp.components.ingest_data import ingest_data
from rooivalk_kfp.components.register_model import register_model
from rooivalk_kfp.components.tracking_runs import close_run, open_run
from rooivalk_kfp.components.train_model import train_model
from rooivalk_kfp.pipelines.kubernetes import configure_tasks

PIPELINE_NAME = "rooivalk-training"
STEPS = ["ingest_data", "train_model", "evaluate_model", "export_model", "register_model"]


def build_training_pipeline(cluster: ClusterSpec | None = None) -> Callable[..., Any]:
    """The pipeline with a plan's `cluster` settings on its tasks (none: KFP's defaults)."""

    @dsl.pipeline(name=PIPELINE_NAME, description="Train or fine-tune a plan's model, evaluate, export, register.")
    def training_pipeline(plan: dict, run_key: str = ""):
        # KFP's cache key ignores data content (a new file under the same source URI would hit the
        # cache), so every task opts out; rooivalk's own content-addressed caches do the reuse.
        closing = close_run(plan=plan, run_key=run_key, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, expected_steps=STEPS)
        closing.set_caching_options(False)
        with dsl.ExitHandler(closing):
            opened = open_run(
                plan=plan, pipeline=PIPELINE_NAME, run_key=run_key, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER
            )
            opened.set_caching_options(False)
            ingest = ingest_data(plan=plan, parent_run_id=opened.output)
            train = train_model(plan=plan, parent_run_id=opened.output, dataset=ingest.outputs["dataset"])
            evaluate = evaluate_model(
                plan=plan, parent_run_id=opened.output, dataset=ingest.outputs["dataset"], model=train.outputs["model"]
            )
            export = export_model(
                plan=plan, parent_run_id=opened.output, dataset=ingest.outputs["dataset"], model=train.outputs["model"]
            )
            export.after(evaluate)  # export only what passed the gates
            register = register_model(
                plan=plan,
                parent_run_id=opened.output,
                dataset_version=ingest.outputs["Output"],
                dataset=ingest.outputs["dataset"],
                model=train.outputs["model"],
                report=evaluate.outputs["report"],
                exported=export.outputs["exported"],
            )
            for task in (ingest, train, evaluate, export, register):
                task.set_caching_options(False)
        configure_tasks(cluster, (closing, opened, ingest, train, evaluate, export, register))

    return training_pipeline


training_pipeline = build_training_pipeline()
