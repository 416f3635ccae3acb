"""The search pipeline: a plan's `search:` on a cluster. Ingest once -> N worker pods (ParallelFor) on one
Optuna study in a shared database -> the report (best plan, trials, plot), inside one MLflow run."""

from collections.abc import Callable
from typing import Any

from kfp import dsl

from rooivalk.plan import ClusterSpec
from rooivalk_kfp.components.ingest_data import ingest_data
from rooivalk_kfp.components.search_report import search_report
from rooivalk_kfp.components.search_worker import search_worker
from rooivalk_kfp.components.tracking_runs import close_run, open_run
from rooivalk_kfp.pipelines.kubernetes import configure_tasks

PIPELINE_NAME = "rooivalk-search"
STEPS = ["ingest_data", "search_worker", "search_report"]


def build_search_pipeline(workers: int, cluster: ClusterSpec | None = None) -> Callable[..., Any]:
    """`workers` worker pods side by side (search.workers), each with the plan's `cluster` settings."""

    @dsl.pipeline(name=PIPELINE_NAME, description="Search a plan's hyperparameters with parallel trial workers.")
    def search_pipeline(plan: dict, run_key: str = ""):
        closing = close_run(plan=plan, run_key=run_key, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, expected_steps=STEPS)
        closing.set_caching_options(False)
        with dsl.ExitHandler(closing):
            opened = open_run(
                plan=plan, pipeline=PIPELINE_NAME, run_key=run_key, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER
            )
            opened.set_caching_options(False)
            ingest = ingest_data(plan=plan, parent_run_id=opened.output)
            ingest.set_caching_options(False)
            with dsl.ParallelFor(items=list(range(workers)), parallelism=workers) as worker:
                trial_worker = search_worker(
                    plan=plan, parent_run_id=opened.output, dataset=ingest.outputs["dataset"], worker=worker
                )
                trial_worker.set_caching_options(False)
            report = search_report(plan=plan, parent_run_id=opened.output)
            report.after(trial_worker)
            report.set_caching_options(False)
        configure_tasks(cluster, (closing, opened, ingest, trial_worker, report))

    return search_pipeline
