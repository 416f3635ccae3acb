"""Library entry points of the search pipeline's components: a plan's `search:` on a cluster.

The compiled search pipeline (rooivalk_kfp.pipelines.search) ingests the data once, runs
`search.workers` worker pods side by side (a KFP ParallelFor), each running its share of `search.trials`
on the one study in `search.storage`, then a report step. The study must live in a database every pod
reaches (PostgreSQL: Optuna's RDB storage; MLflow's own PostgreSQL serves), which is why Optuna's
study rather than a Katib Experiment: the same study, sampler and pruner run locally in sqlite and on
the cluster, the trial is the plan's own training step (no Katib trial template or metrics collector to
keep in step with it), and the study outlives any pod. On a server database a trial's worker beats a
heartbeat; a trial whose pod was preempted goes stale and is queued again with the same values, and
its checkpoints under `training.checkpoint.uri`/search-<study>/trial-<key of its values> let the
retry resume where the pod stopped, as any training step does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from rooivalk.plan import Plan, PlanError, SearchSpec
from rooivalk.search.report import SearchReport
from rooivalk.search.runner import (
    finish_search,
    search_settings,
    searchable_plan,
    share_trials,
    tag_search_run,
    work,
)
from rooivalk.search.trials import TrialContext
from rooivalk.tracking.runs import required_uri


def cluster_storage(spec: SearchSpec, origin: str = "plan") -> str:
    """The study's database for worker pods: a server every pod reaches, not a file on one of them."""
    if spec.storage is None or spec.storage.startswith("sqlite"):
        raise PlanError(
            f"{origin}: search.storage: a search on a cluster needs a database every worker pod reaches "
            "(e.g. postgresql+psycopg://user@host/db, MLflow's PostgreSQL); sqlite is one machine's: "
            "run `rooivalk search` there instead"
        )
    return spec.storage


def _study_name(plan: Plan) -> str:
    assert plan.search is not None
    return plan.search.study_name or plan.name


def search_worker(
    plan_dict: dict[str, Any], parent_run_id: str, dataset_dir: str, worker: int, run_key: str
) -> dict[str, float]:
    """Worker `worker` of the plan's search: its share of the trials, each an MLflow run nested under
    `parent_run_id`; `run_key` (the pipeline run's id) tells this run's trials from a rerun's on the same
    study. Returns {"trials": the trials it ran} (a retried pod runs what its share has left)."""
    from rooivalk.search.study import claim_study, open_study, wait_for_claim
    from rooivalk.tracking.runs import client_for

    plan = searchable_plan(plan_dict, f"search worker {worker}")
    assert plan.search is not None
    storage, tracking_uri = cluster_storage(plan.search), required_uri(plan)
    settings = search_settings(plan.search)
    shares = share_trials(settings.trials, settings.workers)
    if not 0 <= worker < len(shares):
        raise ValueError(f"worker {worker}: the search has {len(shares)} workers (0..{len(shares) - 1})")
    study = open_study(plan.search, storage, _study_name(plan))
    if worker:
        wait_for_claim(study)  # worker 0 claims the study (and queues a grid) before any worker samples
    claim_study(study, plan)
    experiment_id = client_for(tracking_uri).get_run(parent_run_id).info.experiment_id
    base = plan.training.checkpoint.uri
    checkpoints = f"{base.rstrip('/')}/search-{_study_name(plan)}" if base else None
    with tempfile.TemporaryDirectory(prefix=f"search-worker-{worker}-") as scratch:  # trial models: the pod's
        context = TrialContext(
            plan_dict,
            f"search worker {worker}",
            scratch,
            dataset_dir,
            tracking_uri,
            experiment_id,
            parent_run_id,
            checkpoints,
            worker,
            run_key,
        )
        ran = work(context, storage, _study_name(plan), shares[worker], plan.training.threads, worker)
    return {"trials": float(ran)}


def search_report(plan_dict: dict[str, Any], parent_run_id: str, out_dir: str) -> SearchReport:
    """search.json, best_plan.yaml and search.png of the study in `out_dir`, logged to `parent_run_id`; a
    study in which no trial completed is an error naming its counts."""
    plan = searchable_plan(plan_dict, "search report")
    assert plan.search is not None
    storage, tracking_uri, study = cluster_storage(plan.search), required_uri(plan), _study_name(plan)
    tag_search_run(tracking_uri, parent_run_id, plan, study, storage)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    report = finish_search(plan_dict, plan.search, storage, study, Path(out_dir), tracking_uri, parent_run_id)
    if report.best is None:
        raise RuntimeError(f"search {study!r}: no trial completed ({report.counts()}); see {out_dir}/search.json")
    return report
