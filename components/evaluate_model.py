"""KFP adapter for rooivalk.evaluation.evaluate_model."""

from kfp import dsl

from rooivalk_kfp.components.images import EVAL_IMAGE


@dsl.component(base_image=EVAL_IMAGE, install_kfp_package=False)
def evaluate_model(
    plan: dict,
    parent_run_id: str,
    dataset: dsl.Input[dsl.Dataset],
    model: dsl.Input[dsl.Model],
    report: dsl.Output[dsl.Artifact],
    classification: dsl.Output[dsl.ClassificationMetrics],
    metrics: dsl.Output[dsl.Metrics],
) -> bool:
    """Test-split metrics and confusion matrix; fails the pipeline when a gate fails (plan option)."""
    from rooivalk.evaluation import evaluate_model as run
    from rooivalk.steps import pipeline_step

    with pipeline_step("evaluate_model", plan, parent_run_id) as step:
        result = run(step.plan, model_dir=model.path, dataset_dir=dataset.path, eval_dir=report.path)
        step.record(result.metrics, {"report": report.path}, log_files=[report.path], gates=result.gates)
    if "confusion_matrix" in result.report:  # a detector's report has per-class AP and operating points instead
        classification.log_confusion_matrix(result.report["classes"], result.report["confusion_matrix"])
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    return result.passed
