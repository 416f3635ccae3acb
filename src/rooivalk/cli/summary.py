"""summary.json: the run's record, built from step events (contract in docs/summary.md)."""

from __future__ import annotations

from typing import Any


def build_summary(
    pipeline: str,
    events: list[dict[str, Any]],
    steps: list[str],
    pipeline_error: str | None,
    tracking_uri: str,
    run_id: str | None,
    plan_name: str,
    out_dir: str,
) -> dict[str, Any]:
    records: dict[str, dict[str, Any]] = {
        name: {"status": "not_run", "seconds": 0.0, "metrics": {}, "artifacts": {}} for name in steps
    }
    dataset_version = None
    for event in events:
        name = event.get("step")
        if name not in records:
            continue
        if event.get("event") == "step_start":
            records[name]["status"] = "running"
        elif event.get("event") == "step_end":
            record = {key: event.get(key) for key in ("status", "seconds", "metrics", "artifacts")}
            for key in ("error", "gates", "stages", "registered_model", "resumed_from", "features_key", "cache"):
                if key in event:
                    record[key] = event[key]
            records[name] = record
            dataset_version = event.get("dataset_version", dataset_version)
    for record in records.values():  # a step killed before its end event
        if record["status"] == "running":
            record["status"] = "failed"
    ok = pipeline_error is None and all(r["status"] == "succeeded" for r in records.values())
    return {
        "pipeline": pipeline,
        "plan": plan_name,
        "status": "succeeded" if ok else "failed",
        "error": pipeline_error,
        "dataset_version": dataset_version,
        "steps": records,
        "tracking": {"uri": tracking_uri, "run_id": run_id},
        "out_dir": out_dir,
    }
