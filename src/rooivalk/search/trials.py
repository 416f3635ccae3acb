"""One trial of a search: the plan with the sampled values, trained through the engine, scored, tracked.

A trial's plan is the searched plan (without `search:`) with each sampled value set at its path, as
`--set path=value` sets it, then validated like any plan: a combination the plan refuses fails the trial
with the refusal as its reason, and the search goes on. The trial trains on the data ingested once for
the search (its own model folder and checkpoints under trials/<number>/), reports its objective figure
after every epoch to Optuna's pruner (a pruned trial stops there), and scores its best epoch. Each trial
is an MLflow run nested under the search's run (tag mlflow.parentRunId), holding its parameters, its
per-epoch objective, its state and its resolved plan (plan.yaml).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rooivalk.plan import Plan, PlanError, SearchSpec, validate_plan
from rooivalk.plan.loading import set_values
from rooivalk.search.study import suggest

PLAN_FILE = "plan.yaml"


def trial_raw_plan(raw: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The searched plan (a file's dict or a pipeline's parameter dict) with each value set at its path,
    as it is (no YAML re-parsing), and without its search section."""
    plan = set_values(raw, params)
    plan.pop("search", None)
    return plan


def _validated(raw: dict[str, Any], origin: str) -> Plan:
    """The trial's plan validated as `rooivalk run` validates one (plugins, the stages on the model's
    layer groups): a refusal is a PlanError, which fails this trial only."""
    from rooivalk.training.tasks import plugin_task_info
    from rooivalk.training.trainer import check_stages_against_model

    plan = validate_plan(raw, origin, resolver=plugin_task_info)
    try:
        check_stages_against_model(plan)
    except ValueError as error:
        raise PlanError(f"{origin}: {error}") from None
    return plan


@dataclass
class TrialContext:
    """What every trial of one search shares (picklable: workers are separate processes)."""

    raw: dict[str, Any]  # the searched plan as written (its search section included)
    origin: str
    out_dir: str
    dataset_dir: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    # Where trials checkpoint on a cluster (a pod may be preempted): <base>/trial-<key of its values>, so
    # the retry of a stale trial (the same values) resumes from its checkpoints; None: a local folder per
    # trial, removed when it ends.
    checkpoint_base: str | None = None
    worker: int = 0  # which worker ran a trial (a retried worker pod runs only what its share has left)
    run_key: str | None = None  # a cluster search: the pipeline run's id, which its workers' trials carry
    threads: int | None = None  # torch threads of each trial when the plan sets none (parallel local workers)


class _Objective:
    """Optuna's objective: (trial) -> the best epoch's objective figure."""

    def __init__(self, context: TrialContext, spec: SearchSpec) -> None:
        self.context, self.spec = context, spec

    def __call__(self, trial: Any) -> float:
        import optuna

        from rooivalk import storage
        from rooivalk.tracking.runs import client_for
        from rooivalk.training.engine.errors import Preempted

        params = {path: suggest(trial, path, parameter) for path, parameter in self.spec.space.items()}
        trial.set_user_attr("worker", self.context.worker)
        if self.context.run_key is not None:
            trial.set_user_attr("run_key", self.context.run_key)
        folder = Path(self.context.out_dir) / "trials" / f"{trial.number:04d}"
        client = client_for(self.context.tracking_uri)
        run = client.create_run(
            self.context.experiment_id,
            run_name=f"trial-{trial.number}",
            tags={"mlflow.parentRunId": self.context.parent_run_id, "rooivalk.search_trial": str(trial.number)},
        )
        run_id = run.info.run_id
        trial.set_user_attr("mlflow_run_id", run_id)  # a retried worker pod closes it if this pod dies
        for path, value in params.items():
            client.log_param(run_id, path, value)
        started = time.perf_counter()
        status, preempted = "FAILED", False
        try:
            plan = _validated(trial_raw_plan(self.context.raw, params), f"{self.context.origin} trial {trial.number}")
            storage.write_text(folder / PLAN_FILE, yaml.safe_dump(plan.model_dump(mode="json"), sort_keys=False))
            client.log_artifact(run_id, str(folder / PLAN_FILE))
            value = self._train(trial, plan, folder, client, run_id)
            status = "FINISHED"
            client.log_metric(run_id, f"best_{self.spec.objective.name}", value)
            return value
        except optuna.TrialPruned:
            status = "KILLED"
            client.set_tag(run_id, "rooivalk.search_state", "pruned")
            raise
        except Preempted:
            # The pod is going away: the same values run again (any worker, or this one's retry), resuming
            # from this trial's checkpoints (keyed by the first trial of these values).
            status, preempted = "KILLED", True
            first = trial.user_attrs.get("retry_of", trial.number)
            trial.study.enqueue_trial(params, user_attrs={"retry_of": first}, skip_if_exists=False)
            client.set_tag(run_id, "rooivalk.search_state", f"preempted; queued again as a retry of trial {first}")
            raise
        except Exception as error:  # this trial failed; the search records why and goes on (or stops)
            trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:5000])
            client.set_tag(run_id, "rooivalk.search_error", f"{type(error).__name__}: {error}"[:5000])
            raise
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - started)
            client.log_metric(run_id, "trial_seconds", time.perf_counter() - started)
            client.set_terminated(run_id, status)
            if not preempted:  # the trial is over: its model stays, its checkpoints go
                _remove_tree(self._checkpoint_uri(trial, folder))

    def _checkpoint_uri(self, trial: Any, folder: Path) -> str:
        """Locally the trial's own folder; on a cluster <base>/trial-<first trial of these values>, so the
        retry of a preempted trial resumes from its checkpoints."""
        if self.context.checkpoint_base is None:
            return str(folder / "checkpoints")
        first = int(trial.user_attrs.get("retry_of", trial.number))
        return f"{self.context.checkpoint_base.rstrip('/')}/trial-{first:04d}"

    def _train(self, trial: Any, plan: Plan, folder: Path, client: Any, run_id: str) -> float:
        """Train the trial's plan; report each figure to the pruner; the figure of what ships."""
        from rooivalk.training.engine.phases import compression_phases
        from rooivalk.training.trainer import train_model

        phases = [phase.name for phase in compression_phases(plan.training)]
        score = _TrialScore(self.spec, trial, client, run_id, plan.evaluation.cross_validation is not None, phases)
        resume = self.context.checkpoint_base is not None  # a retry on a cluster resumes; locally each is new
        checkpoints = plan.training.checkpoint.model_copy(
            update={"uri": self._checkpoint_uri(trial, folder), "resume": resume}
        )
        update: dict[str, Any] = {"checkpoint": checkpoints}
        if plan.training.threads is None and self.context.threads is not None:
            update["threads"] = self.context.threads  # N parallel workers share the cores
        plan = plan.model_copy(update={"training": plan.training.model_copy(update=update)})
        train_model(plan, self.context.dataset_dir, str(folder / "model"), progress=score.progress)
        return score.value(trial.number)


class _TrialScore:
    """A trial's objective from the training's events. A cross-validated trial is scored, and pruned, after
    each fold by the folds' running mean, and scores their mean over every fold; else after each epoch,
    scoring its best epoch, and with compression phases (pruning, QAT) only the last phase's epochs,
    since its best epoch is what ships."""

    def __init__(self, spec: SearchSpec, trial: Any, client: Any, run_id: str, folds: bool, phases: list[str]) -> None:
        self.metric, self.maximize = spec.objective.name, spec.objective.resolved_direction == "maximize"
        self.trial, self.client, self.run_id = trial, client, run_id
        self.event, self.phases = ("fold_end" if folds else "epoch_end"), phases
        self.seen: list[float] = []
        self.scored: list[float] = []

    def progress(self, event: dict[str, Any]) -> None:
        if event.get("event") != self.event:
            return
        if self.metric not in event:  # a fold_end always has it: validate allows only cv_<m>_mean then
            figures = sorted(k for k, v in event.items() if k.startswith("val_") and isinstance(v, float))
            raise ValueError(
                f"search.objective.metric {self.metric!r} is not a per-epoch figure of this model: {figures}"
            )
        value = float(event[self.metric])
        self.seen.append(value)
        if self.event == "fold_end":
            step, where = int(event["fold"]), f"fold {int(event['fold']) + 1}"
        else:
            step = int(event.get("global_epoch", len(self.seen)))  # the engine's count: a resumed trial goes on
            where = f"epoch {step}"
        if self.event == "fold_end" or not self.phases or event.get("stage") == self.phases[-1]:
            self.scored.append(value)
        self.client.log_metric(self.run_id, self.metric, value, step=step)
        self.trial.report(value, step=step)
        if self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"{where}: {self.metric} {value:.4g}")

    def value(self, number: int) -> float:
        if not self.seen:
            raise ValueError(f"trial {number} trained no epoch: no {self.metric} to score")
        if self.event == "fold_end":
            return self.scored[-1]  # the mean over every fold
        if not self.scored:
            raise ValueError(f"trial {number} ended before its {self.phases[-1]} phase: no {self.metric} of what ships")
        return max(self.scored) if self.maximize else min(self.scored)


def objective(context: TrialContext, spec: SearchSpec) -> _Objective:
    return _Objective(context, spec)


def _remove_tree(uri: str) -> None:
    """Delete every file under `uri` (a local folder or an s3:// prefix); nothing there is fine."""
    from rooivalk import storage

    if "://" not in uri:
        shutil.rmtree(uri, ignore_errors=True)
        return
    for found in storage.list_uris(uri):
        storage.delete(found)
