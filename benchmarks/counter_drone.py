"""The counter-drone system: each sensor alone vs fusion, degraded mode, and what modality dropout buys.

Two ways to get the trained system:
- `--from-run runs/counter-drone-demo` reads what `make demo` (the KFP pipeline) produced: its
  dataset, four sensor models, cached features and fusion model (no retraining);
- without it, the plan's whole system is trained in this process (train_multisensor).

Then, on the same cached features, fusion is retrained for every modality-dropout rate of
`--dropout-sweep` and every seed of `--fusion-seeds` (fusion trains in ~15 s on cached features), so
"dropout vs no dropout" is a mean over seeds, not one draw, and the plan's rate can be checked
against the validation split. Writes docs/results/counter_drone/counter_drone.md and .json
(benchmarks/reports/counter_drone.py); prints one JSON object last, with the ratio of fusion to the
best single sensor.

    make demo && .venv/bin/python benchmarks/counter_drone.py --from-run runs/counter-drone-demo
    .venv/bin/python benchmarks/counter_drone.py --set data.simulate.count=600 --out /tmp/cd  # in-process smoke run
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from rooivalk.cli.local_run import resolve_plan
from rooivalk.evaluation.multisensor_report import evaluate_system
from rooivalk.plan import load_plan

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: the helpers import from the benchmarks package
    sys.path.insert(0, str(ROOT))

from benchmarks.analysis.counter_drone import (  # noqa: E402
    airframe_probe,
    dropout_sweep,
    fine_label_encoders,
    information_ceiling,
    scene_table,
    specialists,
    sweep_means,
)
from benchmarks.harness.trained_system import export_report, from_run, in_process  # noqa: E402
from benchmarks.reports.counter_drone import Findings, write_report  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default=str(ROOT / "pipelines/plans/counter_drone.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="plan override a.b=c")
    parser.add_argument(
        "--from-run", help="a `rooivalk run` folder of this plan (its summary.json names the artifacts)"
    )
    parser.add_argument("--work-dir", default="runs/counter-drone-bench", help="in-process mode: dataset, cache")
    parser.add_argument(
        "--dropout-sweep", default="0,0.2,0.5,0.8", help="modality-dropout rates to retrain fusion with"
    )
    parser.add_argument("--fusion-seeds", default="0,1,2", help="fusion training seeds per rate")
    parser.add_argument(
        "--fine-labels",
        default="",
        help="sensors to retrain on (class, airframe) pairs, to test whether class-only training hides the "
        "airframe from fusion (e.g. acoustic,optical; ~5 min here); empty: skip",
    )
    parser.add_argument(
        "--out", default=str(ROOT / "docs/results/counter_drone"), help="where counter_drone.md/.json go"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = resolve_plan(load_plan(args.plan, args.overrides), Path(args.work_dir).resolve())
    assert plan.fusion is not None, f"{args.plan} is not a multi-sensor plan"
    fine_sensors = [name.strip() for name in args.fine_labels.split(",") if name.strip()]
    unknown = sorted(set(fine_sensors) - set(plan.sensors or {}))
    if unknown:  # checked before anything trains
        raise SystemExit(f"--fine-labels: no sensor named {', '.join(unknown)} in {args.plan} "
                         f"(sensors: {', '.join(plan.sensors or {})})")  # fmt: skip
    started = time.perf_counter()
    if args.from_run:
        dataset, sensors, features, fusion, origin = from_run(Path(args.from_run))
    else:
        dataset, sensors, features, fusion, origin = in_process(plan, Path(args.work_dir).resolve())
    results = evaluate_system(dataset, sensors, features, fusion)
    rates = [float(v) for v in args.dropout_sweep.split(",") if v.strip()]
    seeds = [int(v) for v in args.fusion_seeds.split(",") if v.strip()]
    sweep = dropout_sweep(plan.fusion, dataset, features, rates, seeds)
    means = sweep_means(sweep)
    scenes = scene_table(dataset, origin["dataset_dir"])
    ceiling = information_ceiling(dataset, scenes)
    probes = airframe_probe(dataset, features, scenes)
    fine = fine_label_encoders(plan, dataset, features, scenes, fine_sensors, seeds) if fine_sensors else None
    specialist_scores = specialists(plan.fusion, dataset, features, seeds)
    seconds = time.perf_counter() - started

    fusion_scores = results["fusion"]
    best_sensor = max(scores["accuracy"] for scores in results["sensors"].values())
    plan_rate = plan.fusion.modality_dropout.p
    command = "    .venv/bin/python benchmarks/counter_drone.py" + (
        f" --from-run {args.from_run}" if args.from_run else ""
    )
    command += "".join(f" --set {shlex.quote(o)}" for o in args.overrides)
    defaults = parse_args([])
    options = ("plan", "work_dir", "dropout_sweep", "fusion_seeds", "fine_labels", "out")  # printed if not default
    for option in options:
        if getattr(args, option) != getattr(defaults, option):
            command += f" --{option.replace('_', '-')} {shlex.quote(str(getattr(args, option)))}"
    export = export_report(origin) if "export_dir" in origin else None
    found = Findings(results, sweep, ceiling, probes, fine, specialist_scores, export, origin, seconds)
    write_report(
        Path(args.out), found, dataset, plan_name=Path(args.plan).name, plan_rate=plan_rate, seeds=seeds,
        command=command, from_run=bool(args.from_run),
    )  # fmt: skip
    no_dropout, chosen = means.get(0.0), means.get(plan_rate)
    print(
        json.dumps(
            {
                "fusion_accuracy": fusion_scores["accuracy"],
                "best_sensor_accuracy": best_sensor,
                "ratio_fusion_to_best_sensor": fusion_scores["accuracy"] / best_sensor,
                "one_missing_mean": fusion_scores["degraded_summary"]["one_missing_mean"],
                "sweep_test_one_missing_mean_plan_rate": chosen["test"]["one_missing_mean"] if chosen else None,
                "sweep_test_one_missing_mean_no_dropout": no_dropout["test"]["one_missing_mean"]
                if no_dropout
                else None,
                "false_positive_rate": fusion_scores["false_positive_rate"],
                "seconds": seconds,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
