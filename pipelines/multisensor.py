"""The multi-sensor pipeline (the counter-drone system): ingest -> one training task per sensor, in
parallel -> cache features -> train fusion -> evaluate -> export -> register, in one MLflow run.

The sensor list is fixed when the pipeline is built (`multisensor_pipeline(["optical", ...])`), so
the step names, the ParallelFor fan-out and the exit handler's expected steps are all known to KFP;
`rooivalk compile`/`run` build it from the plan's `sensors`.
"""

from collections.abc import Callable
from typing import Any

from kfp import dsl

from rooivalk.plan import ClusterSpec
from rooivalk_kfp.components.cache_features import cache_features
from rooivalk_kfp.components.evaluate_system import evaluate_system
from rooivalk_kfp.components.export_system import export_system
from rooivalk_kfp.components.ingest_events import ingest_events
from rooivalk_kfp.components.register_attribution import register_attribution
from rooivalk_kfp.components.register_system import register_system
from rooivalk_kfp.components.tracking_runs import close_run, open_run
from rooivalk_kfp.components.train_attribution import train_attribution
from rooivalk_kfp.components.train_fusion import train_fusion
from rooivalk_kfp.components.train_sensor import train_sensor
from rooivalk_kfp.pipelines.kubernetes import configure_tasks

PIPELINE_NAME = "rooivalk-multisensor"


ATTRIBUTION_STEPS = ["train_attribution", "register_attribution"]


def multisensor_steps(sensors: list[str], attribution: bool = False) -> list[str]:
    """The step names a run of the pipeline reports, in order (progress and the exit handler use them);
    `attribution`: the plan has an attribution model, trained and registered by steps of their own."""
    return [
        "ingest_events",
        *(f"train_sensor_{sensor}" for sensor in sensors),
        "cache_features",
        "train_fusion",
        "evaluate_system",
        "export_system",
        "register_system",
        *(ATTRIBUTION_STEPS if attribution else []),
    ]


def multisensor_pipeline(
    sensors: list[str], parallelism: int = 0, cluster: ClusterSpec | None = None, attribution: bool = False
) -> Callable[..., Any]:
    """The pipeline for these sensors; `parallelism` caps concurrent sensor tasks (0: all at once, the
    cluster default; `rooivalk run` uses 1 on a laptop-sized machine, where parallel training only
    slows each task and would eat a wall-clock-budgeted stage's time); `cluster`: the plan's
    Kubernetes settings for the tasks; `attribution`: add the attribution model's steps (the plan's
    `attribution` section), which depend on nothing but the parent run."""
    if not sensors:
        raise ValueError("a multi-sensor pipeline needs at least one sensor")
    steps = multisensor_steps(sensors, attribution)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=f"Sensors {', '.join(sensors)}: per-sensor models in parallel, feature cache, fusion, "
        "evaluation with degraded mode, ONNX export, registration.",
    )
    def pipeline(plan: dict, run_key: str = ""):
        # As in the training pipeline, KFP's own caching is off (its key ignores data content);
        # the feature cache is content-addressed and its key is passed on as a parameter.
        closing = close_run(plan=plan, run_key=run_key, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, expected_steps=steps)
        closing.set_caching_options(False)
        with dsl.ExitHandler(closing):
            opened = open_run(
                plan=plan, pipeline=PIPELINE_NAME, run_key=run_key, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER
            )
            ingest = ingest_events(plan=plan, parent_run_id=opened.output)
            with dsl.ParallelFor(items=sensors, parallelism=parallelism) as sensor:
                train = train_sensor(
                    plan=plan,
                    run_key=run_key,
                    job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                    sensor=sensor,
                    dataset=ingest.outputs["dataset"],
                )
                train.after(opened)  # the parent run must exist; found by run key
                train.set_caching_options(False)

            def models() -> dsl.Collected:
                # A new Collected per consumer: compiling one rewrites it to the loop group's name.
                return dsl.Collected(train.outputs["model"])

            tracked = {"plan": plan, "parent_run_id": opened.output}  # every tracked step's first inputs
            on_data = {**tracked, "dataset": ingest.outputs["dataset"]}
            cached = cache_features(**on_data, models=models())
            fusion = train_fusion(**on_data, features_key=cached.outputs["Output"], features=cached.outputs["features"])
            fused = fusion.outputs["model"]
            evaluate = evaluate_system(**on_data, models=models(), features=cached.outputs["features"], fusion=fused)
            export = export_system(**on_data, models=models(), fusion=fused)
            export.after(evaluate)  # export only what passed the gates
            register = register_system(
                **tracked,
                dataset_version=ingest.outputs["Output"],
                dataset=ingest.outputs["dataset"],
                models=models(),
                fusion=fused,
                report=evaluate.outputs["report"],
                exported=export.outputs["exported"],
            )
            tasks = [opened, ingest, cached, fusion, evaluate, export, register]
            if attribution:  # its own table and model: runs beside the sensor branch
                attributed = train_attribution(**tracked)
                registered = register_attribution(
                    **tracked,
                    dataset_version=attributed.outputs["Output"],
                    attribution=attributed.outputs["attribution"],
                )
                tasks += [attributed, registered]
            for task in tasks:
                task.set_caching_options(False)
        configure_tasks(cluster, (closing, train, *tasks))

    return pipeline
