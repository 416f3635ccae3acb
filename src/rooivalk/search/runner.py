"""`rooivalk search PLAN`: the plan's `search:` run as an Optuna study, locally, one or more workers.

The data are ingested once (`<out>/dataset`); the study lives in `search.storage` (default sqlite
`<out>/study.db`); the search is one MLflow run (`search-<study>`) with a nested run per trial
(rooivalk.search.trials). With `search.workers` N > 1, N processes share the study, each running its
share of `search.trials` (so exactly that many trials run, none twice: the database hands out trial
numbers). Afterwards: search.json (every trial, the best), best_plan.yaml (the plan with the best values
and no search section: `rooivalk run` takes it as is) and search.png (objective by trial, best so far,
parameter importance), also logged to the search's run.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rooivalk.plan import Plan, PlanError, SearchSpec, validate_plan
from rooivalk.search.report import SearchReport, write_report
from rooivalk.search.study import grid_size, open_study, sampler_seed, storage_url
from rooivalk.search.trials import TrialContext, objective

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchSettings:
    """What one call runs: the plan's search section, or the CLI's overrides of its size."""

    trials: int
    workers: int


def search_settings(spec: SearchSpec, trials: int | None = None, workers: int | None = None) -> SearchSettings:
    count = trials or spec.trials
    if spec.sampler == "grid":
        count = min(count, grid_size(spec))  # a grid has no more points than that
    return SearchSettings(count, min(workers or spec.workers, count))


def share_trials(trials: int, workers: int) -> list[int]:
    """Each worker's trial count: `trials` split as evenly as possible."""
    return [trials // workers + (1 if index < trials % workers else 0) for index in range(workers)]


def work(
    context: TrialContext, storage: str, study_name: str, trials: int, threads: int | None, worker: int, finished: int
) -> None:
    """Worker `worker`: its share of the study's trials (a separate process with workers > 1); `finished`:
    the trials the study held before this search started (they move the sampler's seed)."""
    import optuna
    import torch

    if threads:
        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plan = validate_plan(context.raw, context.origin)
    assert plan.search is not None
    context = dataclasses.replace(context, worker=worker)
    study = open_study(plan.search, storage, study_name, sampler_seed(plan.search, worker, finished))
    done = sum(1 for t in study.trials if t.user_attrs.get("worker") == worker and t.state.is_finished())
    trials = max(trials - done, 0) if context.checkpoint_base is not None else trials  # a retried worker pod
    # A plan the trial's values make invalid fails that trial, not the search.
    study.optimize(objective(context, plan.search), n_trials=trials, catch=(PlanError,), callbacks=[_announce])


def _announce(_study: Any, trial: Any) -> None:
    """One line per finished trial (print: workers are separate processes writing to the same terminal)."""
    value = "" if trial.value is None else f" {trial.value:.4g}"
    reason = f" ({trial.user_attrs['error'].splitlines()[-1].strip()})" if "error" in trial.user_attrs else ""
    params = ", ".join(f"{key}={value!r}" for key, value in trial.params.items())
    print(f"trial {trial.number}: {trial.state.name.lower()}{value} [{params}]{reason}", flush=True)


def open_search_run(plan: Plan, tracking_uri: str, study_name: str, storage: str) -> tuple[str, str]:
    """(experiment id, run id) of the search's own MLflow run, under which every trial's run nests."""
    from rooivalk.tracking.runs import client_for

    client = client_for(tracking_uri)
    experiment = client.get_experiment_by_name(plan.tracking.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(plan.tracking.experiment)
    run = client.create_run(experiment_id, run_name=f"search-{study_name}", tags={"rooivalk.search_study": study_name})
    tag_search_run(tracking_uri, run.info.run_id, plan, study_name, storage)
    return experiment_id, run.info.run_id


def tag_search_run(tracking_uri: str, run_id: str, plan: Plan, study_name: str, storage: str) -> None:
    from rooivalk.tracking.runs import client_for

    assert plan.search is not None
    client = client_for(tracking_uri)
    client.set_tag(run_id, "rooivalk.search_study", study_name)
    client.log_param(run_id, "storage", storage.split("@")[-1])  # no password in the tracking server
    client.log_param(run_id, "sampler", plan.search.sampler)


def finish_search(
    raw: dict[str, Any], spec: SearchSpec, storage: str, study_name: str, out: Path, tracking_uri: str, parent: str
) -> SearchReport:
    """search.json, best_plan.yaml and search.png in `out`, logged to the search's run."""
    from rooivalk.tracking.runs import client_for

    report = write_report(open_study(spec, storage, study_name), spec, raw, out)
    client = client_for(tracking_uri)
    for path in report.files():
        client.log_artifact(parent, str(path))
    if report.best is not None:
        client.log_metric(parent, f"best_{spec.objective.metric}", report.best["value"])
    return report


def run_search(
    raw: dict[str, Any],
    origin: str,
    out_dir: str | Path,
    trials: int | None = None,
    workers: int | None = None,
    say: Callable[[str], None] | None = None,
) -> SearchReport:
    """Run the search of the plan `raw` (validated here; errors name `origin`), writing to `out_dir`."""
    from rooivalk.data import ingest_data
    from rooivalk.tracking.runs import client_for, default_tracking_uri

    say = say or log.info
    plan = searchable_plan(raw, origin)
    assert plan.search is not None
    spec, settings = plan.search, search_settings(plan.search, trials, workers)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    dataset_dir = out / "dataset"
    if not (dataset_dir / "dataset.json").is_file():
        say(f"ingesting {plan.data.source} -> {dataset_dir} (once, for every trial)")
        ingest_data(plan.data, str(dataset_dir))
    storage, study_name = storage_url(spec, out), spec.study_name or plan.name
    tracking_uri = plan.tracking.uri or default_tracking_uri(out)
    experiment_id, parent = open_search_run(plan, tracking_uri, study_name, storage)
    context = TrialContext(raw, origin, str(out), str(dataset_dir), tracking_uri, experiment_id, parent)
    finished = len(open_study(spec, storage, study_name).trials)  # made here: workers never race to make it
    say(f"study {study_name!r} in {storage.split('@')[-1]}: {settings.trials} trials, {settings.workers} worker(s)")
    threads = plan.training.threads or max((os.cpu_count() or 1) // settings.workers, 1)
    shares = share_trials(settings.trials, settings.workers)
    if settings.workers == 1:
        work(context, storage, study_name, shares[0], plan.training.threads, 0, finished)
    else:
        spawn = multiprocessing.get_context("spawn")  # no forked torch/MLflow state in the workers
        processes = [
            spawn.Process(target=work, args=(context, storage, study_name, n, threads, worker, finished))
            for worker, n in enumerate(shares)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        failed = [p.exitcode for p in processes if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"{len(failed)} search worker(s) failed (exit codes {failed}); see the log above")
    report = finish_search(raw, spec, storage, study_name, out, tracking_uri, parent)
    client_for(tracking_uri).set_terminated(parent, "FINISHED")
    return report


def searchable_plan(raw: dict[str, Any], origin: str) -> Plan:
    """The validated plan, refused when it has no search section or is a multi-sensor system."""
    plan = validate_plan(raw, origin)
    if plan.search is None:
        raise PlanError(f"{origin}: the plan has no search section: nothing to search")
    if plan.sensors is not None:
        raise PlanError(f"{origin}: search: a search of a multi-sensor system is not built; search a sensor's plan")
    return plan
