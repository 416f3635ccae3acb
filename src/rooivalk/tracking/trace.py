"""Bidirectional traceability (ASPICE MLE.3): from a model version down to its data, plan, code and
requirements, and back up from a dataset version or a requirement to every run and model version that
used it. The lookups return plain dicts (`rooivalk trace ... --json` prints them; the CLI draws tables).

Nothing is stored for them; they read what the pipeline already wrote:
  version tags         rooivalk.dataset_version, rooivalk.requirement.<id>, rooivalk.status, ... (model_record)
  model_record.json    the registration run's record: requirement texts and criteria, training, artifacts
  ingest step run      tagged rooivalk.dataset_version, holds dataset_card.json (sources, counts)
  pipeline run         the ingest run's parent: its step runs are the runs trained and evaluated on the data
  rooivalk.promotion   a champion re-scored on a challenger's dataset version was evaluated on that data too

An unknown model, version, dataset version or requirement raises TraceError with one line naming it.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from typing import Any

from mlflow.exceptions import MlflowException

from rooivalk.tracking import lifecycle
from rooivalk.tracking.model_record import RECORD_FILE, REQUIREMENT_TAG, step_runs
from rooivalk.tracking.promotion import DATASET_TAG, DECISION_TAG
from rooivalk.tracking.runs import PARENT_TAG, STEP_TAG

CARD_FILE = "dataset_card.json"  # written by the ingest steps (rooivalk.steps.ingest_step)
REQUIREMENT_IDS_TAG = "rooivalk.requirement_ids"
PACKAGE_TAG = "rooivalk.version."
_PAGE = 1000


class TraceError(LookupError):
    """What was asked for is not in the tracking store; the message names it in one line."""


def _all_pages(search: Any) -> list[Any]:
    """Every item of a paged MLflow search (`search(page_token)` returns a PagedList)."""
    found: list[Any] = []
    token = None
    while True:
        page = search(token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _literal_safe(*values: str | None) -> bool:
    # A quote or backtick would end the filter string's literal; such a value is matched here instead.
    return not any(v is not None and ("'" in v or "`" in v) for v in values)


def model_versions(client: Any, name: str | None = None, tag: str | None = None, value: str | None = None) -> list[Any]:
    """Model versions (of model `name` when given) that carry version tag `tag` (equal to `value` when
    given), oldest first."""
    parts = [f"name = '{name}'"] if name is not None else []
    if tag is not None:
        parts.append(f"tags.`{tag}` = '{value}'" if value is not None else f"tags.`{tag}` LIKE '%'")
    found = None
    if _literal_safe(name, tag, value):
        try:
            found = _all_pages(
                lambda token: client.search_model_versions(" and ".join(parts), max_results=_PAGE, page_token=token)
            )
        except MlflowException:
            # MLflow's own stores take tag filters on model versions (checked with 3.17, sqlite); other
            # registries (Databricks Unity Catalog) refuse them: list every version and match here.
            found = None
    if found is None:
        every = _all_pages(lambda token: client.search_model_versions(None, max_results=_PAGE, page_token=token))
        found = [
            v
            for v in every
            if (name is None or v.name == name)
            and (tag is None or tag in v.tags)
            and (value is None or v.tags.get(tag) == value)
        ]
    return sorted(found, key=lambda v: (v.name, int(v.version)))


def _runs_tagged(client: Any, tag: str, value: str) -> list[Any]:
    """Runs of every active experiment whose tag `tag` equals `value`, oldest first."""
    if not _literal_safe(value):
        return []  # rooivalk's ids never hold a quote, so no run carries such a value
    experiments = _all_pages(lambda token: client.search_experiments(max_results=_PAGE, page_token=token))
    if not experiments:
        return []
    ids = [e.experiment_id for e in experiments]
    runs = _all_pages(
        lambda token: client.search_runs(
            ids, filter_string=f"tags.`{tag}` = '{value}'", max_results=_PAGE, page_token=token
        )
    )
    return sorted(runs, key=lambda r: r.info.start_time or 0)


def _artifact_json(client: Any, run_id: str | None, path: str) -> dict[str, Any] | None:
    """A run's JSON artifact, or None when the run or the file is not there (an older registration, an
    ingestion without a card)."""
    if not run_id:
        return None
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = client.download_artifacts(run_id, path, folder)
            with open(local, encoding="utf-8") as file:
                return dict(json.load(file))
        except (MlflowException, OSError, ValueError):
            return None


def _model_version(client: Any, name: str, version: str) -> Any:
    _registered_model(client, name)
    try:
        return client.get_model_version(name, version)
    except MlflowException:
        known = ", ".join(str(v.version) for v in model_versions(client, name=name)) or "none"
        raise TraceError(f"registered model {name!r} has no version {version!r} (versions: {known})") from None


def _registered_model(client: Any, name: str) -> Any:
    try:
        return client.get_registered_model(name)
    except MlflowException:
        raise TraceError(f"no registered model {name!r}") from None


def _iso(millis: int | None) -> str | None:
    return None if millis is None else datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="seconds")


def parse_requirement_tag(value: str) -> tuple[str, float | None]:
    """A `rooivalk.requirement.<id>` tag ("pass 0.95", "fail 0.81", "not measured") -> (verdict, value)."""
    if value.startswith("not measured"):
        return "not measured", None
    verdict, _, measured = value.partition(" ")
    try:
        return verdict, float(measured) if measured else None
    except ValueError:
        return verdict, None


def _prefixed(tags: dict[str, str], prefix: str) -> dict[str, str]:
    """The tags named `prefix`<key> as {key: value}, by key."""
    return {k.removeprefix(prefix): v for k, v in sorted(tags.items()) if k.startswith(prefix)}


def _stated_requirements(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The requirements as the record states them (id, text, metric, class_name, min, max, value, passed)."""
    return list(record.get("traceability", {}).get("requirements", []))


def _requirements(tags: dict[str, str], record: dict[str, Any]) -> list[dict[str, Any]]:
    """The version's requirements: the verdict and value from its tags, the text and criterion from its
    record (None where the record is missing)."""
    stated = {r["id"]: r for r in _stated_requirements(record)}
    ids = [i for i in tags.get(REQUIREMENT_IDS_TAG, "").split(",") if i]
    ids += sorted(k.removeprefix(REQUIREMENT_TAG) for k in tags if k.startswith(REQUIREMENT_TAG))
    rows = []
    for requirement_id in dict.fromkeys(ids):  # the plan's order, without repeats
        tag = tags.get(f"{REQUIREMENT_TAG}{requirement_id}")
        verdict, value = parse_requirement_tag(tag) if tag is not None else ("not measured", None)
        full = stated.get(requirement_id, {})
        rows.append(
            {
                "id": requirement_id,
                **{key: full.get(key) for key in ("text", "metric", "class_name", "min", "max")},
                "value": full.get("value", value),  # the record's is unrounded; the tag's has 6 digits
                "verdict": verdict,
            }
        )
    return rows


def _card_summary(card: dict[str, Any] | None) -> dict[str, Any] | None:
    """The traceability part of a dataset card. Its schema (rooivalk.data.dataset_card_schema) lives a
    layer above tracking, so the card is read as JSON by field name: within a schema_version fields are
    only added, so these stay."""
    if card is None:
        return None
    sources = card.get("sources") or {}
    return {
        "schema_version": card.get("schema_version"),
        "kind": card.get("kind"),
        "format": card.get("format"),
        "classes": card.get("classes"),
        "sources": sources.get("sources"),
        "simulated": sources.get("simulated"),
        "counts": card.get("counts"),
        "quarantined": (card.get("quarantine") or {}).get("count"),
        "manifest_digest": (card.get("manifest") or {}).get("digest"),
        "created": card.get("created"),
    }


def _ingest_run(client: Any, pipeline_run_id: str | None, dataset_version: str | None) -> Any | None:
    """The pipeline run's ingest step run that made `dataset_version` (an attribution model's dataset is
    made by its training step, not by the ingest step: none then)."""
    if not pipeline_run_id or not dataset_version:
        return None
    try:
        runs = step_runs(client, pipeline_run_id)
    except MlflowException:
        return None
    return next(
        (
            run
            for step, run in runs.items()
            if step.startswith("ingest") and run.data.tags.get(DATASET_TAG) == dataset_version
        ),
        None,
    )


def _version_row(version: Any, aliases: dict[str, list[str]]) -> dict[str, Any]:
    """A model version in a list: who it is, its status and data."""
    return {
        "name": version.name,
        "version": str(version.version),
        "status": lifecycle.status_of(version),
        "aliases": aliases.get(str(version.version), []),
        "dataset_version": version.tags.get(DATASET_TAG),
        "pipeline_run_id": version.tags.get("rooivalk.parent_run_id"),
        "registration_run_id": version.run_id,
        "created": _iso(version.creation_timestamp),
    }


def _aliases_of(client: Any, names: set[str]) -> dict[str, dict[str, list[str]]]:
    """name -> version -> its aliases (search results do not carry them in every store)."""
    found: dict[str, dict[str, list[str]]] = {}
    for name in names:
        by_version: dict[str, list[str]] = {}
        for alias, version in client.get_registered_model(name).aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        found[name] = {version: sorted(a) for version, a in by_version.items()}
    return found


def trace_model(client: Any, name: str, version: str) -> dict[str, Any]:
    """Down from a model version: status and approval, the dataset version with its card's sources and
    counts, the requirements with measured values and verdicts, plan, commit, packages, the previous
    version, architecture, training, promotion, runs and artifacts."""
    found = _model_version(client, name, version)
    tags = dict(found.tags)
    record = _artifact_json(client, found.run_id, RECORD_FILE) or {}
    pipeline_run_id = tags.get("rooivalk.parent_run_id") or record.get("runs", {}).get("pipeline")
    dataset_version = tags.get(DATASET_TAG) or record.get("data", {}).get("dataset_version")
    ingest = _ingest_run(client, pipeline_run_id, dataset_version)
    ingest_run_id = None if ingest is None else ingest.info.run_id
    samples = record.get("data", {}).get("samples") or {
        split: int(n) for split, n in _prefixed(tags, "rooivalk.samples.").items()
    }
    by, at, note = (tags.get(tag) for tag in lifecycle.APPROVAL_TAGS)
    previous = tags.get("rooivalk.previous_version")
    training = record.get("training") or {
        step: json.loads(figures) for step, figures in _prefixed(tags, "rooivalk.training.").items()
    }
    return {
        "name": name,
        "version": str(found.version),
        "status": lifecycle.status_of(found),
        "status_history": lifecycle.history_of(found),
        "aliases": sorted(getattr(found, "aliases", None) or []),
        "approval": None if by is None else {"by": by, "at": at, "note": note or ""},
        "dataset": {
            "version": dataset_version,
            "ingest_run_id": ingest_run_id,
            "samples": samples,
            "card": _card_summary(_artifact_json(client, ingest_run_id, CARD_FILE)),
        },
        "requirements": _requirements(tags, record),
        "requirements_passed": {"true": True, "false": False}.get(tags.get(lifecycle.REQUIREMENTS_PASSED_TAG, "")),
        "plan_name": tags.get("rooivalk.plan_name"),
        "plan_digest": tags.get("rooivalk.plan_digest") or record.get("plan_digest"),
        "git_commit": tags.get("rooivalk.git_commit") or record.get("git_commit"),
        "packages": _prefixed(tags, PACKAGE_TAG) or record.get("dependencies", {}),
        "previous_version": None if previous in (None, "none") else previous,
        "architecture": tags.get("rooivalk.architecture"),
        "training": training,
        "promotion": json.loads(tags[DECISION_TAG]) if DECISION_TAG in tags else None,
        "runs": record.get("runs") or {"pipeline": pipeline_run_id, "registration": found.run_id},
        "artifacts": record.get("artifacts", {}),
        "record": tags.get("rooivalk.record"),
    }


def trace_dataset(client: Any, dataset_version: str) -> dict[str, Any]:
    """Up from a dataset version: its card, the pipeline runs that ingested it (with their step runs,
    which trained and evaluated on it), the model versions registered on it, and the champions re-scored
    on it when a challenger trained on it was compared with them."""
    ingests = [
        run
        for run in _runs_tagged(client, DATASET_TAG, dataset_version)
        if (run.data.tags.get(STEP_TAG) or "").startswith("ingest")
    ]
    pipelines = [_pipeline_run(client, ingest) for ingest in ingests]
    card = next((c for c in (_artifact_json(client, r.info.run_id, CARD_FILE) for r in ingests) if c), None)
    versions = model_versions(client, tag=DATASET_TAG, value=dataset_version)
    if not pipelines and not versions:
        raise TraceError(f"no dataset version {dataset_version!r}: no ingest run or model version carries it")
    aliases = _aliases_of(client, {v.name for v in versions})
    return {
        "dataset_version": dataset_version,
        "card": _card_summary(card),
        "pipeline_runs": pipelines,
        "model_versions": [_version_row(v, aliases[v.name]) for v in versions],
        "rescored": _rescored_on(versions, dataset_version),
    }


def _pipeline_run(client: Any, ingest: Any) -> dict[str, Any]:
    """The pipeline run above an ingest step run, with its step runs (all but the ingest ran on its data)."""
    parent_id = ingest.data.tags.get(PARENT_TAG)
    try:
        parent = client.get_run(parent_id) if parent_id else None
        steps = step_runs(client, parent_id) if parent_id else {}
    except MlflowException:  # the pipeline run was deleted: the ingest run still says the data was made
        parent, steps = None, {}
    return {
        "run_id": parent_id,
        "run_name": None if parent is None else parent.info.run_name,
        "pipeline": None if parent is None else parent.data.tags.get("rooivalk.pipeline"),
        "status": None if parent is None else parent.info.status,
        "started": _iso(None if parent is None else parent.info.start_time),
        "ingest_run_id": ingest.info.run_id,
        "steps": [{"step": s, "run_id": r.info.run_id, "status": r.info.status} for s, r in steps.items()],
    }


def _rescored_on(versions: list[Any], dataset_version: str) -> list[dict[str, Any]]:
    """Champions evaluated on `dataset_version` by promotion: the decisions of the challengers trained on
    it that re-scored a champion of another dataset version (rooivalk.tracking.promotion)."""
    found = []
    for challenger in versions:
        decision = json.loads(challenger.tags.get(DECISION_TAG, "{}"))
        if f"re-scored on dataset {dataset_version})" not in decision.get("reason", ""):
            continue
        found.append(
            {
                "name": challenger.name,
                "version": decision.get("champion_version"),
                "metric": decision.get("metric"),
                "score": decision.get("champion_score"),
                "challenger_version": str(challenger.version),
                "challenger_score": decision.get("challenger_score"),
                "promoted": decision.get("promoted"),
            }
        )
    return found


def trace_requirement(client: Any, requirement_id: str, model: str | None = None) -> dict[str, Any]:
    """Up from a requirement: every registered version (of `model` when given) that carries it, with its
    measured value, verdict, status and dataset version; the requirement's text and criterion as the
    newest of them states it."""
    if model is not None:
        _registered_model(client, model)
    versions = model_versions(client, name=model, tag=f"{REQUIREMENT_TAG}{requirement_id}")
    if not versions:
        known = sorted(
            {i for v in model_versions(client, name=model) for i in v.tags.get(REQUIREMENT_IDS_TAG, "").split(",") if i}
        )
        where = f"of {model!r} " if model is not None else ""
        raise TraceError(
            f"no model version {where}carries requirement {requirement_id!r}; "
            f"requirement ids in the registry: {', '.join(known) or 'none'}"
        )
    aliases = _aliases_of(client, {v.name for v in versions})
    rows = []
    for version in versions:
        verdict, value = parse_requirement_tag(version.tags[f"{REQUIREMENT_TAG}{requirement_id}"])
        rows.append({**_version_row(version, aliases[version.name]), "value": value, "verdict": verdict})
    newest = max(versions, key=lambda v: v.creation_timestamp or 0)
    record = _artifact_json(client, newest.run_id, RECORD_FILE) or {}
    stated = next((r for r in _stated_requirements(record) if r.get("id") == requirement_id), {})
    return {
        "requirement": {
            "id": requirement_id,
            **{key: stated.get(key) for key in ("text", "metric", "class_name", "min", "max")},
            "stated_by": f"{newest.name} version {newest.version}",
        },
        "model": model,
        "versions": rows,
    }
