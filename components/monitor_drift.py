"""KFP adapter for rooivalk.monitoring.drift.run_drift_check (batch drift check)."""

from typing import NamedTuple

from kfp import dsl

from rooivalk_kfp.components.images import MONITOR_IMAGE


@dsl.component(base_image=MONITOR_IMAGE, install_kfp_package=False)
def monitor_drift(
    plan: dict,
    reference_uri: str,
    current_uri: str,
    report: dsl.Output[dsl.Artifact],
    html: dsl.Output[dsl.HTML],
    metrics: dsl.Output[dsl.Metrics],
) -> NamedTuple("Outputs", [("retrain", bool), ("reason", str)]):
    """Check current data against the reference profile (empty reference_uri: the plan's
    monitoring.reference_uri); `report` holds drift_report.html and drift.json, `html` the report for
    the KFP UI; `retrain` is the verdict that starts the retraining branch."""
    # KFP ships only this function's source, so imports live in the body.
    import shutil

    from rooivalk.monitoring.drift import REPORT_HTML, reference_for, run_drift_check
    from rooivalk.plan import Plan

    spec = Plan.model_validate(plan).monitoring
    result = run_drift_check(spec, reference_for(spec, reference_uri), current_uri, report.path)
    shutil.copyfile(f"{report.path}/{REPORT_HTML}", html.path)
    for name, value in result.summary_metrics().items():
        metrics.log_metric(name, value)
    return result.retrain, result.reason  # KFP maps a plain tuple onto the NamedTuple's fields
