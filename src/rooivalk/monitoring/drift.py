"""Batch drift check with Evidently 0.7: per-column drift, dataset drift share, prediction drift and
embedding drift, written as an HTML report and `drift.json`.

Evidently picks each column's test by type and size (numerical: K-S p-value up to 1,000 rows,
Wasserstein distance above; categorical: chi-squared / Z-test p-value, Jensen-Shannon distance above);
it sizes by the reference, this module by the smaller side (see SMALL_SAMPLE_ROWS).
A p-value drifts when it is below its threshold, a distance when it is at or above it. Embeddings
(one group per sensor) use Evidently's classifier method: the ROC AUC of a model telling reference
from current rows; above `embedding_threshold` is drift. The dataset drifts when the share of
drifted tabular columns reaches the plan's `drift_share`; the verdict `retrain` is that, or drift in
an embedding group (new data the encoders place elsewhere), and `reason` says which.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rooivalk import storage
from rooivalk.evaluation.profile import PREDICTION, ProfileInfo, check_frame, load_frame, load_profile
from rooivalk.plan import MonitoringSpec

DRIFT_JSON = "drift.json"
REPORT_HTML = "drift_report.html"
EMBEDDING_PREFIX = "embeddings:"
# The highest rate of dataset-drift verdicts over same-distribution batches that the default settings
# are meant to keep: the detector's design target, which benchmarks/drift.py and the unit tests check.
FALSE_ALARM_TOLERANCE = 0.1


@dataclass
class ColumnDrift:
    drifted: bool
    score: float
    method: str
    threshold: float


@dataclass
class DriftResult:
    dataset_drift: bool
    drift_share: float
    columns: dict[str, ColumnDrift]
    retrain: bool
    reason: str
    threshold: float
    reference_rows: int
    current_rows: int
    prediction_drift: bool | None = None
    files: dict[str, str] = field(default_factory=dict)

    def drifted_columns(self) -> list[str]:
        return [name for name, column in self.columns.items() if column.drifted]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_metrics(self) -> dict[str, float]:
        """The numbers a pipeline step logs: drift share, dataset verdict (0/1), drifted columns."""
        return {
            "drift_share": self.drift_share,
            "dataset_drift": float(self.dataset_drift),
            "drifted_columns": float(len(self.drifted_columns())),
        }


def reference_for(spec: MonitoringSpec, reference: str | None, option: str = "reference_uri") -> str:
    """The reference profile to use: the caller's, else the plan's monitoring.reference_uri."""
    chosen = reference or spec.reference_uri
    if not chosen:
        raise ValueError(f"no reference profile: pass {option} or set monitoring.reference_uri in the plan")
    return chosen


# Methods whose score is a p-value (drift when below the threshold): Evidently's defaults name
# themselves "... p_value"; the small-sample methods this module passes go by their short names.
# (Evidently's per-column test status is not used: with a method passed by short name it judges
# the p-value as a distance.)
P_VALUE_METHODS = {"ks", "chisquare", "z"}


def _column_drift(config: dict[str, Any], value: float) -> ColumnDrift:
    method, threshold = str(config["method"]), float(config["threshold"])
    p_value = "p_value" in method or method in P_VALUE_METHODS
    drifted = value < threshold if p_value else value >= threshold
    return ColumnDrift(bool(drifted), float(value), method, threshold)


# Evidently picks p-value tests up to this many reference rows and distances above; a distance from a
# small current sample is noisy (normed Wasserstein of 250 same-distribution rows vs 2,000: ~0.1, the
# threshold), so the smaller side decides here.
SMALL_SAMPLE_ROWS = 1000


def _report(info: ProfileInfo, spec: MonitoringSpec, groups: list[str], rows: int) -> Any:
    from evidently import Report
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import model
    from evidently.metrics.embeddings import EmbeddingsDrift
    from evidently.presets import DataDriftPreset

    tabular = [column.name for column in info.columns]
    small = {"num_method": "ks", "cat_method": "chisquare"} if rows <= SMALL_SAMPLE_ROWS else {}
    preset = DataDriftPreset(columns=tabular, drift_share=spec.drift_share, threshold=spec.stattest_threshold, **small)
    metrics: list[Any] = [preset]
    for group in groups:
        # PCA to 20 components keeps the classifier's cost flat in the embedding width.
        method = model(threshold=spec.embedding_threshold, pca_components=min(20, len(info.embeddings[group])))
        metrics.append(EmbeddingsDrift(embeddings_name=group, drift_method=method))
    return Report(metrics)


def _dataset(frame: pd.DataFrame, info: ProfileInfo, groups: list[str]) -> Any:
    from evidently import DataDefinition, Dataset

    kinds = info.kinds()
    numerical = [name for name, kind in kinds.items() if kind == "numerical"]
    categorical = [name for name, kind in kinds.items() if kind == "categorical"]
    embedding_columns = {group: info.embeddings[group] for group in groups}
    numerical += [name for names in embedding_columns.values() for name in names]
    definition = DataDefinition(
        numerical_columns=numerical, categorical_columns=categorical, embeddings=embedding_columns or None
    )
    return Dataset.from_pandas(frame, data_definition=definition)


def check_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    info: ProfileInfo,
    spec: MonitoringSpec,
    embeddings: bool | None = None,
    html_path: str | None = None,
) -> DriftResult:
    """Compare `current` with `reference` (both already in the profile's schema; see check_frame)."""
    use_embeddings = spec.embeddings if embeddings is None else embeddings
    groups = [g for g in info.embeddings if use_embeddings and all(c in current for c in info.embeddings[g])]
    rows = min(len(reference), len(current))
    snapshot = _report(info, spec, groups, rows).run(_dataset(current, info, groups), _dataset(reference, info, groups))
    columns: dict[str, ColumnDrift] = {}
    share = 0.0
    for metric in snapshot.dict()["metrics"]:
        config, value = metric["config"], metric["value"]
        kind = config["type"].rsplit(":", 1)[-1]
        if kind == "ValueDrift":
            columns[config["column"]] = _column_drift(config, float(value))
        elif kind == "DriftedColumnsCount":
            share = float(value["share"])
        elif kind == "EmbeddingsDrift":
            score = float(value)
            drifted = score > spec.embedding_threshold
            columns[f"{EMBEDDING_PREFIX}{config['embeddings_name']}"] = ColumnDrift(
                drifted, score, "classifier ROC AUC", spec.embedding_threshold
            )
    dataset_drift = share >= spec.drift_share
    drifted_names = [name for name, column in columns.items() if column.drifted]
    drifted_embeddings = [name for name in drifted_names if name.startswith(EMBEDDING_PREFIX)]
    if dataset_drift:
        reason = f"{share:.0%} of columns drifted (threshold {spec.drift_share:.0%}): {', '.join(drifted_names)}"
    elif drifted_embeddings:
        reason = f"embedding drift in {', '.join(drifted_embeddings)} (ROC AUC > {spec.embedding_threshold})"
    else:
        reason = f"no dataset drift: {share:.0%} of columns drifted (threshold {spec.drift_share:.0%})"
    result = DriftResult(
        dataset_drift=dataset_drift,
        drift_share=share,
        columns=columns,
        retrain=dataset_drift or bool(drifted_embeddings),
        reason=reason,
        threshold=spec.drift_share,
        reference_rows=len(reference),
        current_rows=len(current),
        prediction_drift=columns[PREDICTION].drifted if PREDICTION in columns else None,
    )
    if html_path is not None:
        snapshot.save_html(html_path)
    return result


def run_drift_check(spec: MonitoringSpec, reference_uri: str, current_uri: str, out_dir: str) -> DriftResult:
    """`rooivalk drift` and the monitor_drift component: load both sides, check the current data
    against the reference schema (a problem names the file and column), check drift, and write
    `out_dir/drift_report.html` and `out_dir/drift.json`."""
    reference, info = load_profile(reference_uri)
    current_raw = load_frame(current_uri)
    use_embeddings = (
        spec.embeddings and bool(info.embeddings) and all(name in current_raw for name in info.embedding_columns())
    )
    current = check_frame(info, current_raw, current_uri, embeddings=use_embeddings)
    reference = check_frame(info, reference, reference_uri, embeddings=use_embeddings)
    if len(current) == 0:
        raise ValueError(f"{current_uri}: no rows to check")
    with tempfile.TemporaryDirectory(prefix="rooivalk-drift-") as work:
        html = Path(work) / REPORT_HTML
        result = check_drift(reference, current, info, spec, use_embeddings, str(html))
        result.files[REPORT_HTML] = storage.write_bytes(f"{out_dir}/{REPORT_HTML}", html.read_bytes())
    payload = {**result.as_dict(), "reference": reference_uri, "current": current_uri, "model": info.model}
    result.files[DRIFT_JSON] = storage.write_text(f"{out_dir}/{DRIFT_JSON}", json.dumps(payload, indent=2))
    return result
