"""A model version's lifecycle in the registry: draft -> training -> validated -> released, and deprecated.

The status is the version's tag `rooivalk.status`; every change is appended to `rooivalk.status_history`
(JSON: status, when, by whom, note) and checked against the allowed transitions, so that a version is
`validated` only when every requirement of its plan passed (rooivalk.tracking.model_record; a plan that
lists none: once its gates passed, as they must for it to be registered) and `released` only through
`rooivalk approve`, which records the approver and the date and moves the alias `released` (and
`champion`, where promotion waited for the approval). A refused change raises LifecycleError before
anything is written. Changes are not transactions: two people approving versions of one model at the
same moment may interleave (each re-reads before it writes, which narrows, not closes, the window).

  draft      registered; its record (training run, artifacts, figures) is being written
  training   trained and recorded, not validated: a requirement failed or was not measured
  validated  every requirement passed; waits for approval where the plan asks for it
  released   approved (by, at, note); the alias `released` points at the newest
  deprecated replaced by a newer release, or withdrawn (`rooivalk deprecate`)
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from mlflow.exceptions import MlflowException

from rooivalk.tracking.promotion import AWAITING_TAG, CHAMPION

STATUS_TAG = "rooivalk.status"
HISTORY_TAG = "rooivalk.status_history"
APPROVAL_TAGS = ("rooivalk.approved_by", "rooivalk.approved_at", "rooivalk.approval_note")
REQUIREMENTS_PASSED_TAG = "rooivalk.requirements_passed"  # "true" / "false", written with the record
STATUSES = ("draft", "training", "validated", "released", "deprecated")
RELEASED = "released"
ALLOWED = {
    "draft": ("training", "deprecated"),
    "training": ("validated", "deprecated"),
    "validated": ("released", "deprecated"),
    "released": ("deprecated",),
    "deprecated": (),
}


class LifecycleError(ValueError):
    """A status change that is not allowed, or an approval that cannot be given; nothing was changed."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def status_of(version: Any) -> str | None:
    """The version's lifecycle status (None for a version registered before lifecycles)."""
    status = version.tags.get(STATUS_TAG)
    return None if status is None else str(status)


def history_of(version: Any) -> list[dict[str, Any]]:
    return list(json.loads(version.tags.get(HISTORY_TAG, "[]")))


def check_transition(name: str, version: str, current: str | None, target: str) -> None:
    """LifecycleError naming the version when `current` -> `target` is not an allowed move."""
    if target not in STATUSES:
        raise LifecycleError(f"{name} version {version}: unknown status {target!r}; statuses: {', '.join(STATUSES)}")
    allowed = ALLOWED.get(current or "draft", ()) if current is not None else ("draft",)
    if target not in allowed:
        raise LifecycleError(
            f"{name} version {version} is {current}: it may move to {', '.join(allowed) or 'nothing'}, not {target}"
        )


def move(client: Any, name: str, version: str, target: str, by: str, note: str = "") -> list[dict[str, Any]]:
    """Move the version to `target` (checked), recording who and when; returns the new history."""
    found = client.get_model_version(name, version)
    check_transition(name, version, status_of(found), target)
    history = [*history_of(found), {"status": target, "at": now(), "by": by, "note": note}]
    client.set_model_version_tag(name, version, HISTORY_TAG, json.dumps(history, separators=(",", ":")))
    client.set_model_version_tag(name, version, STATUS_TAG, target)
    return history


def _version(client: Any, name: str, version: str) -> Any:
    try:
        return client.get_model_version(name, version)
    except MlflowException as error:
        raise LifecycleError(f"no version {version} of registered model {name!r} ({error.message})") from error


def approve(client: Any, name: str, version: str, by: str, note: str = "") -> dict[str, Any]:
    """Release a validated version: approver, date and note recorded, alias `released` moved to it (the
    version it leaves is deprecated), and `champion` too where promotion waited for this approval. Every
    check is made before the first write. Returns {"approved_by", "approved_at", "note", "deprecated",
    "champion"}."""
    if not by.strip():
        raise LifecycleError(f"{name} version {version}: an approval needs the approver's name (--by)")
    found = _version(client, name, version)
    status = status_of(found)
    if REQUIREMENTS_PASSED_TAG not in found.tags:
        raise LifecycleError(
            f"{name} version {version} has no model record (registered before records and lifecycles): nothing "
            "says it met its requirements; register it again to approve it"
        )
    if found.tags.get(REQUIREMENTS_PASSED_TAG) == "false":
        failing = [
            key.removeprefix("rooivalk.requirement.")
            for key, value in found.tags.items()
            if key.startswith("rooivalk.requirement.") and value.startswith("fail")
        ]
        raise LifecycleError(
            f"{name} version {version} did not pass its requirements ({', '.join(sorted(failing)) or 'not measured'}): "
            "it cannot be approved"
        )
    if status != "validated":
        raise LifecycleError(f"{name} version {version} is {status}: only a validated version can be approved")
    previous = _released_version(client, name)
    at = now()
    move(client, name, version, RELEASED, by, note)
    for tag, value in zip(APPROVAL_TAGS, (by, at, note), strict=True):
        client.set_model_version_tag(name, version, tag, value)
    client.set_registered_model_alias(name, RELEASED, version)
    deprecated = None
    previous = None if previous is None else client.get_model_version(name, str(previous.version))  # read again
    if previous is not None and str(previous.version) != str(version) and status_of(previous) == RELEASED:
        move(client, name, str(previous.version), "deprecated", by, f"replaced by version {version}")
        deprecated = str(previous.version)
    champion = found.tags.get(AWAITING_TAG) == "champion"
    if champion:
        client.set_registered_model_alias(name, CHAMPION, version)
        client.delete_model_version_tag(name, version, AWAITING_TAG)
    return {"approved_by": by, "approved_at": at, "note": note, "deprecated": deprecated, "champion": champion}


def deprecate(client: Any, name: str, version: str, by: str, note: str = "") -> list[str]:
    """Withdraw a version (any status but deprecated): the aliases `released` and `champion` leave it (a
    deprecated model is served by nobody; promote another); returns the aliases it lost."""
    if not by.strip():
        raise LifecycleError(f"{name} version {version}: deprecating needs a name (--by)")
    found = _version(client, name, version)
    aliases = [alias for alias in (RELEASED, CHAMPION) if alias in (found.aliases or [])]
    move(client, name, version, "deprecated", by, note)  # checks the transition before it writes
    for alias in aliases:
        client.delete_registered_model_alias(name, alias)
    return aliases


def _released_version(client: Any, name: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(name, RELEASED)
    except MlflowException:
        return None
