"""The Prometheus metrics of `rooivalk monitor serve`: names and labels in one place.

The exporter registers these names and the generated alert rules and dashboard
(`rooivalk.monitoring.assets`) query them, so a rename here reaches both; the tests check that every
series the rules and the dashboard read is one of these. Counters carry their `_total` suffix and the
histogram its base name (Prometheus adds `_bucket`, `_sum`, `_count`), i.e. the names as scraped.
"""

from __future__ import annotations

from typing import Final

# Labels.
MODEL: Final = "model"
FEATURE: Final = "feature"
REASON: Final = "reason"
OUTCOME: Final = "outcome"

# Values of the `outcome` label of RETRAIN_EVENTS_TOTAL.
OUTCOME_SENT: Final = "sent"
OUTCOME_FAILED: Final = "failed"

# Gauges set by each drift check.
DRIFT_SHARE: Final = "rooivalk_drift_share"  # share of drifted columns at the last check
DRIFT_DETECTED: Final = "rooivalk_drift_detected"  # 1 when the last check flagged dataset drift, else 0
DRIFT_THRESHOLD: Final = "rooivalk_drift_threshold"  # the plan's drift-share threshold
FEATURE_DRIFT_SCORE: Final = "rooivalk_feature_drift_score"
FEATURE_DRIFTED: Final = "rooivalk_feature_drifted"  # 0/1 per feature
DRIFT_LAST_CHECK_TIMESTAMP: Final = "rooivalk_drift_last_check_timestamp_seconds"
DRIFT_CHECK_DURATION: Final = "rooivalk_drift_check_duration_seconds"  # histogram

# Ingestion.
ROWS_INGESTED_TOTAL: Final = "rooivalk_rows_ingested_total"
BATCHES_REJECTED_TOTAL: Final = "rooivalk_batches_rejected_total"
WINDOW_ROWS: Final = "rooivalk_window_rows"  # rows in the current window

# Retraining signals sent (or failed to send) when drift is detected.
RETRAIN_EVENTS_TOTAL: Final = "rooivalk_retrain_events_total"

# Every metric and its labels, as exposed.
METRIC_LABELS: Final[dict[str, tuple[str, ...]]] = {
    DRIFT_SHARE: (MODEL,),
    DRIFT_DETECTED: (MODEL,),
    DRIFT_THRESHOLD: (MODEL,),
    FEATURE_DRIFT_SCORE: (MODEL, FEATURE),
    FEATURE_DRIFTED: (MODEL, FEATURE),
    DRIFT_LAST_CHECK_TIMESTAMP: (MODEL,),
    DRIFT_CHECK_DURATION: (MODEL,),
    ROWS_INGESTED_TOTAL: (MODEL,),
    BATCHES_REJECTED_TOTAL: (MODEL, REASON),
    WINDOW_ROWS: (MODEL,),
    RETRAIN_EVENTS_TOTAL: (MODEL, OUTCOME),
}
