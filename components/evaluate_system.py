"""KFP adapter for rooivalk.evaluation.multisensor_report.evaluate_fusion_step."""

from kfp import dsl

from rooivalk_kfp.components.images import EVAL_IMAGE


@dsl.component(base_image=EVAL_IMAGE, install_kfp_package=False)
def evaluate_system(
    plan: dict,
    parent_run_id: str,
    dataset: dsl.Input[dsl.Dataset],
    models: dsl.Input[list[dsl.Model]],
    features: dsl.Input[dsl.Dataset],
    fusion: dsl.Input[dsl.Model],
    report: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
) -> bool:
    """Sensors alone, fusion, per class, false-positive rate and the degraded-mode table on the test
    split; fails the pipeline when a gate fails (plan option)."""
    from rooivalk.evaluation.multisensor_report import evaluate_fusion_step as run
    from rooivalk.steps import pipeline_step

    with pipeline_step("evaluate_system", plan, parent_run_id) as step:
        result = run(step.plan, dataset.path, [m.path for m in models], features.path, fusion.path, report.path)
        step.record(result.metrics, {"report": report.path}, log_files=[report.path], gates=result.gates)
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    return result.passed
