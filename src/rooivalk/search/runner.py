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
from rooivalk.plan.search import hide_password
from rooivalk.search.report import SearchReport, write_report
from rooivalk.search.study import claim_study, grid_size, open_study, sampler_seed, storage_url
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
    context: TrialContext,
    storage: str,
    study_name: str,
    trials: int,
    threads: int | None,
    worker: int,
    finished: int | None = None,
) -> int:
    """Worker `worker`: its share of the study's trials (a separate process with workers > 1); `finished`:
    the trials the study held before this search started (they move the sampler's seed; None: counted
    now). On a cluster (context.run_key) a retried worker pod first queues again the trials it left
    running, then runs only what its share has left; with search.epoch_budget it stops once the study
    spent it. Returns the trials it ran."""
    import torch

    from rooivalk.training.engine.errors import TrainingError

    if threads:
        torch.set_num_threads(threads)
    plan = validate_plan(context.raw, context.origin)
    assert plan.search is not None
    if finished is None:
        finished = len(open_study(plan.search, storage, study_name).trials)
    context = dataclasses.replace(context, worker=worker, threads=threads)
    study = open_study(plan.search, storage, study_name, sampler_seed(plan.search, worker, finished))
    if context.run_key is not None:
        trials = max(trials - _requeue_and_count(study, worker, context.run_key, context.tracking_uri), 0)
    # A trial whose plan the values make invalid, or whose training fails (a non-finite loss, out of memory),
    # fails alone: the search goes on. Preempted propagates: the pod is going away.
    catch = (PlanError, TrainingError, torch.cuda.OutOfMemoryError)
    ran: list[int] = []
    callbacks = [_announce, lambda _study, trial: ran.append(trial.number)]
    if plan.search.epoch_budget is not None:
        if epochs_trained(study) >= plan.search.epoch_budget:  # a continued study that spent it already
            print(f"epoch budget of {plan.search.epoch_budget} spent already: no trial", flush=True)
            return 0
        callbacks.append(_stop_at_budget(plan.search.epoch_budget))
    study.optimize(objective(context, plan.search), n_trials=trials, catch=catch, callbacks=callbacks)
    return len(ran)


def epochs_trained(study: Any) -> int:
    """The epochs every trial of the study reported so far, running ones included (one figure per epoch)."""
    return sum(len(trial.intermediate_values) for trial in study.get_trials(deepcopy=False))


def _stop_at_budget(budget: int) -> Callable[[Any, Any], None]:
    """An Optuna callback: this worker starts no further trial once the study trained `budget` epochs (the
    trial that crossed it and the other workers' running ones finish: up to one trial per worker more)."""

    def stop(study: Any, _trial: Any) -> None:
        spent = epochs_trained(study)
        if spent >= budget:
            print(f"epoch budget reached: {spent} of {budget} epochs trained; no further trial", flush=True)
            study.stop()

    return stop


def _requeue_and_count(study: Any, worker: int, run_key: str, tracking_uri: str) -> int:
    """This worker's trials of this pipeline run: those still RUNNING belong to its dead predecessor (one
    pod per worker index is alive) and are failed, their MLflow runs marked KILLED, and queued again with
    their values; returns how many of its share are done (complete, pruned, or failed with an error; a
    preempted trial was requeued)."""
    import optuna

    from rooivalk.tracking.runs import client_for

    State = optuna.trial.TrialState  # noqa: N806
    mine = [t for t in study.trials if t.user_attrs.get("worker") == worker and t.user_attrs.get("run_key") == run_key]
    for trial in (t for t in mine if t.state == State.RUNNING):
        # Optuna has no public call to fail another process's trial; its storage API is what fail_stale_trials uses.
        study._storage.set_trial_state_values(trial._trial_id, State.FAIL)
        if "mlflow_run_id" in trial.user_attrs:
            client_for(tracking_uri).set_terminated(trial.user_attrs["mlflow_run_id"], "KILLED")
        first = trial.user_attrs.get("retry_of", trial.number)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": first}, skip_if_exists=False)
    done = (State.COMPLETE, State.PRUNED)
    return sum(1 for t in mine if t.state in done or (t.state == State.FAIL and "error" in t.user_attrs))


def _announce(_study: Any, trial: Any) -> None:
    """One line per finished trial (print: workers are separate processes writing to the same terminal)."""
    value = "" if trial.value is None else f" {trial.value:.4g}"
    reason = f" ({trial.user_attrs['error'].splitlines()[-1].strip()})" if "error" in trial.user_attrs else ""
    params = ", ".join(f"{key}={value!r}" for key, value in trial.params.items())
    print(f"trial {trial.number}: {trial.state.name.lower()}{value} [{params}]{reason}", flush=True)


def open_search_run(plan: Plan, tracking_uri: str, study_name: str, storage: str) -> tuple[str, str]:
    """(experiment id, run id) of the search's own MLflow run, under which every trial's run nests."""
    from rooivalk.tracking.runs import client_for, ensure_experiment

    client = client_for(tracking_uri)
    experiment_id = ensure_experiment(client, plan.tracking.experiment, tracking_uri)  # artifacts beside the db
    run = client.create_run(experiment_id, run_name=f"search-{study_name}", tags={"rooivalk.search_study": study_name})
    tag_search_run(tracking_uri, run.info.run_id, plan, study_name, storage)
    return experiment_id, run.info.run_id


def tag_search_run(tracking_uri: str, run_id: str, plan: Plan, study_name: str, storage: str) -> None:
    from rooivalk.tracking.runs import client_for

    assert plan.search is not None
    client = client_for(tracking_uri)
    client.set_tag(run_id, "rooivalk.search_study", study_name)
    client.log_param(run_id, "storage", hide_password(storage))
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
        client.log_metric(parent, f"best_{spec.objective.name}", report.best["value"])
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
    from rooivalk.tracking.runs import client_for, default_tracking_uri

    say = say or log.info
    plan = searchable_plan(raw, origin)
    assert plan.search is not None
    spec, settings = plan.search, search_settings(plan.search, trials, workers)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    dataset_dir = _ingested(plan, out / "dataset", say)
    storage, study_name = storage_url(spec, out), spec.study_name or plan.name
    tracking_uri = plan.tracking.uri or default_tracking_uri(out)
    experiment_id, parent = open_search_run(plan, tracking_uri, study_name, storage)
    status = "FAILED"
    try:
        study = open_study(spec, storage, study_name)  # made here: workers never race to make it
        claim_study(study, plan)
        finished = len(study.trials)
        context = TrialContext(raw, origin, str(out), str(dataset_dir), tracking_uri, experiment_id, parent)
        say(f"study {study_name!r} in {hide_password(storage)}: {settings.trials} trials, {settings.workers} worker(s)")
        _run_workers(context, storage, study_name, settings, plan.training.threads, finished)
        status = "FINISHED"
    finally:  # whatever happened, the run is closed and the trials so far are reported
        client_for(tracking_uri).set_terminated(parent, status)
        if status == "FAILED":
            try:
                finish_search(raw, spec, storage, study_name, out, tracking_uri, parent)
            except Exception as error:  # the search's own error is the one to raise
                log.warning("no report of the failed search: %s", error)
    return finish_search(raw, spec, storage, study_name, out, tracking_uri, parent)


def _run_workers(
    context: TrialContext, storage: str, study_name: str, settings: SearchSettings, threads: int | None, finished: int
) -> None:
    """The trials in this process (one worker) or in `settings.workers` processes on the study."""
    shares = share_trials(settings.trials, settings.workers)
    if settings.workers == 1:
        work(context, storage, study_name, shares[0], threads, 0, finished)
        return
    per_worker = threads or max((os.cpu_count() or 1) // settings.workers, 1)  # N workers share the cores
    spawn = multiprocessing.get_context("spawn")  # no forked torch/MLflow state in the workers
    processes = [
        spawn.Process(target=work, args=(context, storage, study_name, n, per_worker, worker, finished))
        for worker, n in enumerate(shares)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [p.exitcode for p in processes if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} search worker(s) failed (exit codes {failed}); see the log above")


def _ingested(plan: Plan, dataset_dir: Path, say: Callable[[str], None]) -> Path:
    """The plan's data ingested once for every trial; again when the data section changed since."""
    from rooivalk import storage
    from rooivalk.data import ingest_data

    spec_file = dataset_dir.parent / "dataset.spec.json"
    spec = plan.data.model_dump_json()
    if not (dataset_dir / "dataset.json").is_file() or not spec_file.is_file() or spec_file.read_text() != spec:
        say(f"ingesting {plan.data.source} -> {dataset_dir} (once, for every trial)")
        ingest_data(plan.data, str(dataset_dir))
        storage.write_text(spec_file, spec)
    return dataset_dir


def searchable_plan(raw: dict[str, Any], origin: str) -> Plan:
    """The validated plan, refused when it has no search section or is a multi-sensor system."""
    plan = validate_plan(raw, origin)
    if plan.search is None:
        raise PlanError(f"{origin}: the plan has no search section: nothing to search")
    if plan.sensors is not None:
        raise PlanError(f"{origin}: search: a search of a multi-sensor system is not built; search a sensor's plan")
    return plan
