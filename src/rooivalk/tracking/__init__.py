"""Tracking, the lowest layer above plan and storage: MLflow runs (one parent per pipeline run, one
nested run per step), the offline buffer that keeps training up while the server is down, and the
registry with champion/challenger promotion. It registers what it is handed and never loads a model.

Modules: `runs` (run bookkeeping, lineage tags), `buffer` (offline records and `rooivalk sync`),
`registry` (register a model version), `promotion` (champion/challenger).
"""

from rooivalk.tracking.runs import (
    PARENT_TAG,
    RUN_KEY_TAG,
    STEP_TAG,
    client_for,
    close_pipeline_run,
    close_pipeline_run_by_key,
    create_pipeline_run,
    default_tracking_uri,
    find_pipeline_run,
    finish_run,
    git_commit,
    lineage_tags,
    log_artifact,
    log_metrics,
    open_pipeline_run,
    open_step_run,
    package_versions,
    pipeline_run_id,
    required_uri,
    set_tags,
    use_buffer_of,
)

__all__ = [
    "PARENT_TAG",
    "RUN_KEY_TAG",
    "STEP_TAG",
    "client_for",
    "close_pipeline_run",
    "close_pipeline_run_by_key",
    "create_pipeline_run",
    "default_tracking_uri",
    "find_pipeline_run",
    "finish_run",
    "git_commit",
    "lineage_tags",
    "log_artifact",
    "log_metrics",
    "open_pipeline_run",
    "open_step_run",
    "package_versions",
    "pipeline_run_id",
    "required_uri",
    "set_tags",
    "use_buffer_of",
]
