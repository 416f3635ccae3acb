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

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rooivalk.plan import Plan, PlanError, SearchSpec, apply_overrides, validate_plan
from rooivalk.search.study import suggest

PLAN_FILE = "plan.yaml"


def trial_raw_plan(raw: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The searched plan without its search section, each value set at its path."""
    base = {key: value for key, value in raw.items() if key != "search"}
    return apply_overrides(base, [f"{path}={json.dumps(value)}" for path, value in params.items()])


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


class _Objective:
    """Optuna's objective: (trial) -> the best epoch's objective figure."""

    def __init__(self, context: TrialContext, spec: SearchSpec) -> None:
        self.context, self.spec = context, spec

    def __call__(self, trial: Any) -> float:
        import optuna

        from rooivalk.tracking.runs import client_for

        params = {path: suggest(trial, path, parameter) for path, parameter in self.spec.space.items()}
        trial.set_user_attr("worker", self.context.worker)
        folder = Path(self.context.out_dir) / "trials" / f"{trial.number:04d}"
        client = client_for(self.context.tracking_uri)
        run = client.create_run(
            self.context.experiment_id,
            run_name=f"trial-{trial.number}",
            tags={"mlflow.parentRunId": self.context.parent_run_id, "rooivalk.search_trial": str(trial.number)},
        )
        run_id = run.info.run_id
        for path, value in params.items():
            client.log_param(run_id, path, value)
        started = time.perf_counter()
        status = "FAILED"
        try:
            try:
                plan = validate_plan(
                    trial_raw_plan(self.context.raw, params), f"{self.context.origin} trial {trial.number}"
                )
            except PlanError as error:
                trial.set_user_attr("error", str(error))
                client.set_tag(run_id, "rooivalk.search_error", str(error)[:5000])
                raise
            folder.mkdir(parents=True, exist_ok=True)
            (folder / PLAN_FILE).write_text(yaml.safe_dump(plan.model_dump(mode="json"), sort_keys=False))
            client.log_artifact(run_id, str(folder / PLAN_FILE))
            value = self._train(trial, plan, folder, client, run_id)
            status = "FINISHED"
            client.log_metric(run_id, f"best_{self.spec.objective.metric}", value)
            return value
        except optuna.TrialPruned:
            status = "KILLED"
            client.set_tag(run_id, "rooivalk.search_state", "pruned")
            raise
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - started)
            client.log_metric(run_id, "trial_seconds", time.perf_counter() - started)
            client.set_terminated(run_id, status)
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # the model stays; its checkpoints go

    def _train(self, trial: Any, plan: Plan, folder: Path, client: Any, run_id: str) -> float:
        """Train the trial's plan; report each epoch's figure to the pruner; the best epoch's figure."""
        import optuna

        from rooivalk.training.trainer import train_model

        metric, maximize = self.spec.objective.metric, self.spec.objective.resolved_direction == "maximize"
        seen: list[float] = []

        def progress(event: dict[str, Any]) -> None:
            if event.get("event") != "epoch_end":
                return
            if metric not in event:
                figures = sorted(k for k, v in event.items() if k.startswith("val_") and isinstance(v, float))
                raise ValueError(
                    f"search.objective.metric {metric!r} is not a per-epoch figure of this model: {figures}"
                )
            value = float(event[metric])
            seen.append(value)
            client.log_metric(run_id, metric, value, step=len(seen))
            trial.report(value, step=len(seen))
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {len(seen)}: {metric} {value:.4g}")

        if self.context.checkpoint_base is None:
            checkpoints = plan.training.checkpoint.model_copy(
                update={"uri": str(folder / "checkpoints"), "resume": False}
            )
        else:
            key = hashlib.sha256(json.dumps(trial.params, sort_keys=True).encode()).hexdigest()[:16]
            uri = f"{self.context.checkpoint_base.rstrip('/')}/trial-{key}"
            checkpoints = plan.training.checkpoint.model_copy(update={"uri": uri, "resume": True})
        plan = plan.model_copy(update={"training": plan.training.model_copy(update={"checkpoint": checkpoints})})
        train_model(plan, self.context.dataset_dir, str(folder / "model"), progress=progress)
        if not seen:
            raise ValueError(f"trial {trial.number} trained no epoch: no {metric} to score")
        return max(seen) if maximize else min(seen)


def objective(context: TrialContext, spec: SearchSpec) -> _Objective:
    return _Objective(context, spec)
