"""Champion / challenger: a newly registered model version becomes `challenger`; it takes `champion`
only when it beats the current champion on the same test set by the plan's metric and margin.

"The same test set" is checked, not assumed: each version carries its dataset version id and its
score as tags. When the champion was scored on another dataset version, its score is not comparable:
`rescore` (champion version -> its score on the challenger's test set, handed in by the caller:
rooivalk.evaluation.rescore downloads and scores it) gives the comparable score. Without one, or when
the champion cannot be scored there (RescoreUnavailable), the champion stays (a person can still move
the alias in MLflow). The decision, both scores and the reason are written to the challenger's version
tags and returned, so the register step logs them on its run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from rooivalk.plan import Plan, PromotionSpec

CHAMPION, CHALLENGER = "champion", "challenger"
SCORE_TAG = "rooivalk.score"
DATASET_TAG = "rooivalk.dataset_version"
DECISION_TAG = "rooivalk.promotion"
AWAITING_TAG = "rooivalk.awaiting_approval"  # "champion": takes the alias when approved (rooivalk.tracking.lifecycle)


class RescoreUnavailable(RuntimeError):
    """The champion cannot be scored on this test set (artifacts missing, classes differ)."""


@dataclass
class PromotionDecision:
    promoted: bool
    metric: str
    challenger_version: str
    challenger_score: float
    champion_version: str | None
    champion_score: float | None
    reason: str

    def as_metrics(self) -> dict[str, float]:
        metrics = {"promotion.promoted": float(self.promoted), "promotion.challenger_score": self.challenger_score}
        if self.champion_score is not None:
            metrics["promotion.champion_score"] = self.champion_score
        return metrics


@dataclass
class Registration:
    """A registered model version and what promotion decided; version "buffered" while the tracking
    server is unreachable (`rooivalk sync` registers and promotes it later)."""

    name: str
    version: str
    decision: PromotionDecision

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def step_metrics(self) -> dict[str, float]:
        """What the register step logs: the version number and the promotion scores (none if buffered)."""
        if not self.version.isdigit():
            return {}
        return {"registered_version": float(self.version), **self.decision.as_metrics()}


def buffered_registration(plan: Plan) -> Registration:
    decision = PromotionDecision(
        promoted=False,
        metric=plan.tracking.promotion.metric or "",
        challenger_version="buffered",
        challenger_score=float("nan"),
        champion_version=None,
        champion_score=None,
        reason="tracking server unreachable: registration buffered; `rooivalk sync` registers and promotes",
    )
    return Registration(plan.tracking.registered_model or plan.name, "buffered", decision)


def report_metrics(report: dict[str, Any]) -> dict[str, float]:
    """Flat test metrics of an evaluation report: a system report's `metrics`, or a single model's
    top-level floats as `test_<name>`."""
    if isinstance(report.get("metrics"), dict):
        return {k: float(v) for k, v in report["metrics"].items() if isinstance(v, int | float)}
    return {f"test_{k}": float(v) for k, v in report.items() if isinstance(v, float)}


def champion_version(client: MlflowClient, name: str) -> Any | None:
    """The registered model's `champion` version, or None when it has none yet."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _better(score: float, other: float, spec: PromotionSpec) -> bool:
    return score > other + spec.margin if spec.mode == "max" else score < other - spec.margin


def _against_champion(
    champion: Any,
    metric: str,
    score: float,
    dataset_version: str,
    spec: PromotionSpec,
    rescore: Callable[[str], float] | None,
) -> tuple[bool, str, float | None]:
    """(promoted, reason, the champion's comparable score or None) of a challenger scoring `score`."""
    same_test_set = champion.tags.get(DATASET_TAG) == dataset_version
    recorded = champion.tags.get(f"{SCORE_TAG}.{metric}")
    why_not = "no re-scorer given"
    champion_score: float | None = None
    if same_test_set and recorded is not None:
        champion_score = float(recorded)
    elif rescore is not None:
        try:
            champion_score = rescore(str(champion.version))
        except RescoreUnavailable as error:
            why_not = str(error)
    if champion_score is None:
        reason = (
            f"champion v{champion.version} was scored on dataset {champion.tags.get(DATASET_TAG)}, "
            f"not {dataset_version}, and cannot be re-scored here ({why_not}): champion kept"
        )
        return False, reason, None
    promoted = _better(score, champion_score, spec)
    relation = "beats" if promoted else "does not beat"
    where = "" if same_test_set else f" (re-scored on dataset {dataset_version})"
    reason = (
        f"{metric} {score:.4f} {relation} champion v{champion.version}'s {champion_score:.4f}{where} "
        f"by more than the margin {spec.margin}"
    )
    return promoted, reason, champion_score


def promote_challenger(
    tracking_uri: str,
    name: str,
    version: str,
    metrics: dict[str, float],
    dataset_version: str,
    spec: PromotionSpec,
    default_metric: str,
    rescore: Callable[[str], float] | None = None,
    not_eligible: str | None = None,
) -> PromotionDecision:
    """Alias `version` as challenger, then decide whether it becomes champion (see module doc); a version
    `not_eligible` (the reason: it failed a requirement) stays challenger whatever it scores; with
    `spec.require_approval` a winning challenger waits for `rooivalk approve` (tag rooivalk.awaiting_approval)
    instead of taking the alias now."""
    metric = spec.metric or default_metric
    if metric not in metrics:
        raise KeyError(f"tracking.promotion.metric: {metric!r} is not in the evaluation report's {sorted(metrics)}")
    score = metrics[metric]
    client = MlflowClient(tracking_uri=tracking_uri)
    client.set_model_version_tag(name, version, f"{SCORE_TAG}.{metric}", str(score))
    client.set_registered_model_alias(name, CHALLENGER, version)
    champion = champion_version(client, name)
    champion_score: float | None = None
    if champion is None:
        promoted, reason = True, "no champion yet"
    elif str(champion.version) == str(version):
        promoted, reason = True, "already champion"
    else:
        promoted, reason, champion_score = _against_champion(champion, metric, score, dataset_version, spec, rescore)
    if not_eligible is not None:
        promoted, reason = False, f"{reason}; not promoted: {not_eligible}"
    if promoted and spec.require_approval and reason != "already champion":
        promoted = False
        reason += f"; awaiting approval (promotion.require_approval): rooivalk approve {name} {version} --by NAME"
        client.set_model_version_tag(name, version, AWAITING_TAG, CHAMPION)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    decision = PromotionDecision(
        promoted,
        metric,
        str(version),
        score,
        None if champion is None else str(champion.version),
        champion_score,
        reason,
    )
    client.set_model_version_tag(name, version, DECISION_TAG, json.dumps(asdict(decision)))
    return decision
