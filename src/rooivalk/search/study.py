"""The Optuna study behind a plan's `search:`: sampler, pruner, storage, and what a trial samples.

Optuna rather than a hand-written loop: its TPE and grid samplers, median / successive-halving pruners
on per-epoch figures, and a study kept in a database (RDBStorage: sqlite for one machine, PostgreSQL for
workers on several pods) so that parallel workers share one history and a rerun continues it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

from rooivalk.plan import ParameterSpec, Plan, SearchSpec
from rooivalk.plan.search import hide_password

SQLITE_TIMEOUT_SECONDS = 60  # parallel local workers wait for sqlite's write lock instead of failing
HEARTBEAT_SECONDS = 60  # a server study: a running trial's worker beats this often; 3 missed beats: stale
CREATE_ATTEMPTS = 5
MAX_RETRIES = 2  # a stale trial (its pod preempted) runs again at most this often, resuming its checkpoints


def storage_url(spec: SearchSpec, out_dir: str | Path) -> str:
    """The study's database: the plan's URL, or sqlite in the search's output folder."""
    return spec.storage or f"sqlite:///{Path(out_dir).resolve() / 'study.db'}"


def grid_size(spec: SearchSpec) -> int:
    return math.prod(len(parameter.grid()) for parameter in spec.space.values())


def _sampler(spec: SearchSpec, seed: int) -> Any:
    import optuna

    if spec.sampler == "random" or spec.sampler == "grid":
        # A grid's points are queued when the study is claimed (claim_study) and every trial runs a queued
        # point; GridSampler itself would let two workers pick one point at once (measured), and it stops a
        # study early while queued points wait. The sampler only draws beyond the queue, which no trial does.
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: running trials count as bad results, so parallel workers do not all sample one point.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=spec.workers > 1)


def _pruner(spec: SearchSpec) -> Any:
    import optuna

    pruner = spec.pruner
    if pruner.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=pruner.startup_trials, n_warmup_steps=pruner.warmup_epochs)
    if pruner.kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(pruner.warmup_epochs, 1))
    return optuna.pruners.NopPruner()


def sampler_seed(spec: SearchSpec, worker: int, finished: int) -> int:
    """The seed of one worker's sampler: search.seed, moved per worker and by the trials the study holds
    already, so parallel workers and a continued study do not draw the same values again."""
    return spec.seed + 1009 * worker + 7919 * finished


def open_study(spec: SearchSpec, storage: str, study_name: str, seed: int | None = None) -> Any:
    """The study named `study_name` in `storage`, created if new (a rerun with the same name continues it),
    its sampler seeded with `seed` (default search.seed). Its direction must be the plan's: a study of
    the other direction is refused, naming both."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # rooivalk says what runs; Optuna's INFO repeats it
    for attempt in range(CREATE_ATTEMPTS):
        try:
            return _open(spec, storage, study_name, spec.seed if seed is None else seed)
        except SQLAlchemyError:
            # Workers starting together race to create the study's tables (PostgreSQL: a unique violation
            # on pg_type); whoever loses finds them made a moment later.
            if attempt == CREATE_ATTEMPTS - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _immediate_transactions(engine: Any) -> None:
    """Every SQLite transaction of `engine` takes the write lock when it begins (BEGIN IMMEDIATE).

    Optuna claims a queued trial by reading it WAITING and writing it RUNNING in one transaction, with a
    SELECT ... FOR UPDATE that SQLite ignores: two local workers could both read it WAITING and both run
    it (seen with two workers on a grid: the second to finish fails with "Cannot tell a COMPLETE trial").
    Begun IMMEDIATE, the second transaction waits until the first committed, then reads RUNNING. The
    SQLAlchemy recipe for SQLite's own transaction control: pysqlite's implicit BEGIN is turned off."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(connection: Any, _: Any) -> None:
        connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners (table creation) would keep the old begin


def _open(spec: SearchSpec, storage: str, study_name: str, seed: int) -> Any:
    import optuna

    if storage.startswith("sqlite"):
        rdb = optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_SECONDS}})
        _immediate_transactions(rdb.engine)
    else:  # workers on pods: a trial whose pod stopped beating is queued again with the same values
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            rdb = optuna.storages.RDBStorage(
                storage,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=3 * HEARTBEAT_SECONDS,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
            )
    study = optuna.create_study(
        storage=rdb,
        study_name=study_name,
        sampler=_sampler(spec, seed),
        pruner=_pruner(spec),
        direction=spec.objective.resolved_direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != spec.objective.resolved_direction:
        raise ValueError(
            f"study {study_name!r} in {hide_password(storage)} {study.direction.name.lower()}s; the plan's objective "
            f"{spec.objective.resolved_direction}s {spec.objective.name}: use another search.study_name"
        )
    return study


DIGEST_ATTR = "rooivalk.search_digest"


def claim_study(study: Any, plan: Plan) -> None:
    """A study holds the trials of one search: the same space, objective and plan (search, tracking and
    cluster settings aside). A new study records their digest; a continued one of another digest is
    refused, naming search.study_name, rather than mixing figures of different searches."""
    assert plan.search is not None
    what = {
        "space": {path: p.model_dump(mode="json") for path, p in plan.search.space.items()},
        "objective": [plan.search.objective.name, plan.search.objective.resolved_direction],
        "plan": plan.model_dump(mode="json", exclude={"search", "tracking", "cluster", "pipeline_root"}),
    }
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()
    recorded = study.user_attrs.get(DIGEST_ATTR)
    if recorded is None:
        if plan.search.sampler == "grid" and not study.trials:
            # Every point queued once, up front: workers pop queued trials atomically, whereas GridSampler
            # picking among unvisited points in two workers at once can pick one point twice (measured).
            for point in grid_points(plan.search):
                study.enqueue_trial(point, skip_if_exists=False)
        study.set_user_attr(DIGEST_ATTR, digest)  # last: other workers wait for it (wait_for_claim)
    elif recorded != digest:
        raise ValueError(
            f"study {study.study_name!r} holds trials of another search (its space, objective or plan differ): "
            "give this one its own search.study_name (or remove the study)"
        )


def grid_points(spec: SearchSpec) -> list[dict[str, Any]]:
    """Every combination of the grid, in order."""
    paths = list(spec.space)
    return [
        dict(zip(paths, values, strict=True)) for values in itertools.product(*(spec.space[p].grid() for p in paths))
    ]


def wait_for_claim(study: Any, timeout: float = 300.0) -> None:
    """Block until the first worker has claimed the study (queued a grid's points): the others start then."""
    deadline = time.monotonic() + timeout
    while DIGEST_ATTR not in study.user_attrs:
        if time.monotonic() > deadline:
            raise TimeoutError(f"study {study.study_name!r}: worker 0 did not claim it within {timeout:.0f} s")
        time.sleep(2.0)


def suggest(trial: Any, path: str, parameter: ParameterSpec) -> Any:
    """The trial's value of one searched key (Optuna names the parameter by its plan path)."""
    if parameter.choices is not None:
        return trial.suggest_categorical(path, parameter.choices)
    low, high = float(parameter.low or 0), float(parameter.high or 0)  # both set: the spec's validator
    if parameter.integer:
        step = int(parameter.step or 1)
        return trial.suggest_int(path, int(low), int(high), step=step, log=parameter.log)
    return trial.suggest_float(path, low, high, step=parameter.step, log=parameter.log)
