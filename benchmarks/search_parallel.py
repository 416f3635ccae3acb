"""Parallel search workers on one PostgreSQL study: two workers finish twice the trials in about the wall
time of one, none lost or run twice.

A tiny search (sign-language GRU/LSTM on 300 simulated sequences, 4 epochs, one torch thread, random
sampler, no pruner) on a fresh PostgreSQL (Debian's, in a temporary folder, rooivalk._dev.servers.
start_postgres): the baseline is one worker running K trials (in this process, as `rooivalk search` does
with workers 1), then two worker processes running 2K trials of a second study in the same database, one
torch thread each (2 cores: one core each). Each figure is the wall time of run_search's call, with the
data ingested beforehand (both searches start from a copy). Both start cold: torch and the trainer are
first imported inside the baseline's call, as each worker process imports them in the other; the
two-worker figure also carries starting the processes (spawn). A process's start (~3 s of imports on 2
cores) is a fixed cost beside K trials: `--count` and `--epochs` make trials longer, so that the figures
show throughput rather than start-up. `lost`: asked-for trials not complete in the study or without their
MLflow run nested under the search's run; `duplicated`: trials, nested runs or parameter draws beyond
one per trial number; both searches summed. The ratio to the baseline (same run) is
seconds_two_workers / seconds_one_worker: ~1.0 means two workers doubled the throughput.

    .venv/bin/python benchmarks/search_parallel.py              # K=4: ~30 s on 2 cores
    .venv/bin/python benchmarks/search_parallel.py --trials 8 --count 1200 --epochs 8 --work-dir /tmp/sb
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rooivalk import machine


def tiny_plan(
    source: Path, storage: str, study: str, trials: int, workers: int, count: int = 300, epochs: int = 4
) -> dict[str, Any]:
    stage = {"name": "main", "epochs": epochs, "train": ["all"], "lr": {"head": 1.0e-3, "backbone": 1.0e-3}}
    return {
        "name": "search-parallel",
        "data": {
            "source": str(source),
            "format": "sequences",
            "simulate": {"kind": "sign_language", "count": count, "seed": 0, "num_classes": 6},
            "label": "label",
            "sequence": {"length": 16},
            "split": {"train": 0.6, "val": 0.2, "test": 0.2, "seed": 0},
        },
        "model": {"family": "rnn", "architecture": "gru-16x1"},
        "training": {"batch_size": 32, "threads": 1, "stages": [stage]},
        "search": {
            "space": {
                "model.architecture": {"choices": ["gru-16x1", "lstm-32x1"]},
                "training.stages.0.lr.head": {"low": 1.0e-4, "high": 3.0e-2, "log": True},
                "model.drop_rate": {"low": 0.0, "high": 0.5},
            },
            "sampler": "random",
            "trials": trials,
            "workers": workers,
            "pruner": {"kind": "none"},
            "storage": storage,
            "study_name": study,
        },
    }


def audit(storage: str, study: str, out: Path, trials: int, started: datetime) -> dict[str, Any]:
    """What the study and MLflow hold for one search of `trials` trials begun at `started`: complete
    trials, lost, duplicated, when its first trial began, and a trial's median seconds."""
    import optuna
    from mlflow.tracking import MlflowClient

    from rooivalk.tracking.runs import default_tracking_uri

    records = optuna.load_study(study_name=study, storage=storage).trials
    complete = {t.number for t in records if t.state == optuna.trial.TrialState.COMPLETE}
    draws = {json.dumps(t.params, sort_keys=True) for t in records}
    client = MlflowClient(tracking_uri=default_tracking_uri(out))
    experiments = [e.experiment_id for e in client.search_experiments()]
    (parent,) = client.search_runs(experiments, f"tags.`rooivalk.search_study` = '{study}'")
    nested = client.search_runs(experiments, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    nested_numbers = [int(run.data.tags["rooivalk.search_trial"]) for run in nested]
    asked = set(range(trials))
    lost = len(asked - complete) + len(asked - set(nested_numbers))
    duplicated = (
        (len(records) - len({t.number for t in records}))
        + (len(nested_numbers) - len(set(nested_numbers)))
        + (len(records) - len(draws))
        + len(complete - asked)
    )
    starts = [t.datetime_start for t in records if t.datetime_start is not None]  # Optuna: local, naive
    return {
        "complete": len(complete),
        "lost": lost,
        "duplicated": duplicated,
        "to_first_trial": (min(starts) - started).total_seconds() if starts else None,
        "median_trial": statistics.median(float(t.user_attrs.get("seconds") or 0.0) for t in records),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="K: the one worker's trials (two workers run 2K)")
    parser.add_argument("--count", type=int, default=300, help="simulated sequences (longer trials: more)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs a trial trains")
    parser.add_argument("--work-dir", default=None, help="default: a temporary folder")
    args = parser.parse_args(argv)

    from rooivalk._dev.servers import start_postgres
    from rooivalk.data import ingest_data
    from rooivalk.plan import validate_plan
    from rooivalk.search import run_search

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="rooivalk-search-bench-")).resolve()
    load_before = os.getloadavg()
    server = start_postgres(work / "postgres", work / "postgres.log")
    try:
        print(f"PostgreSQL at {server.url.split('@')[-1]}; work folder {work}", flush=True)
        source, size = work / "signs.parquet", {"count": args.count, "epochs": args.epochs}
        plans = {
            1: tiny_plan(source, server.url, "one-worker", args.trials, 1, **size),
            2: tiny_plan(source, server.url, "two-workers", 2 * args.trials, 2, **size),
        }
        ingest_data(validate_plan(plans[1], "search_parallel").data, str(work / "dataset"))
        seconds, audits = {}, {}
        for workers, plan in plans.items():
            out = work / f"workers-{workers}"
            shutil.copytree(work / "dataset", out / "dataset")
            trials = plan["search"]["trials"]
            print(f"{workers} worker(s), {trials} trials", flush=True)
            began, started = datetime.now(), time.perf_counter()
            run_search(plan, f"search_parallel ({workers} workers)", out, say=print)
            seconds[workers] = time.perf_counter() - started
            audits[workers] = audit(server.url, plan["search"]["study_name"], out, trials, began)
            print(f"{workers} worker(s): {seconds[workers]:.1f} s, {audits[workers]}", flush=True)
    finally:
        server.stop()
    load_after = os.getloadavg()

    print(
        json.dumps(
            {
                "benchmark": "search_parallel",
                "trials_one_worker": audits[1]["complete"],
                "trials_two_workers": audits[2]["complete"],
                "seconds_one_worker": round(seconds[1], 2),
                "seconds_two_workers": round(seconds[2], 2),
                # Where the time goes: until the first trial began (a worker process's start and imports
                # on the two-worker side), and a trial's median seconds (its first pays the trainer import).
                "seconds_to_first_trial_one_worker": round(audits[1]["to_first_trial"], 2),
                "seconds_to_first_trial_two_workers": round(audits[2]["to_first_trial"], 2),
                "median_trial_seconds_one_worker": round(audits[1]["median_trial"], 3),
                "median_trial_seconds_two_workers": round(audits[2]["median_trial"], 3),
                "count": args.count,
                "epochs": args.epochs,
                "lost": audits[1]["lost"] + audits[2]["lost"],
                "duplicated": audits[1]["duplicated"] + audits[2]["duplicated"],
                "ratio_to_baseline": round(seconds[2] / seconds[1], 3),
                "target_ratio": 1.0,
                "machine": machine.describe(),
                "load_average": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
