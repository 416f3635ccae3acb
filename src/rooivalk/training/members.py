"""What the trainings of several members of one model share (a detector ensemble's members, a plan's variants):
progress events tagged with the member, and the saved result that lets a rerun skip a finished member."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rooivalk import storage
from rooivalk.events import ProgressFn
from rooivalk.training.results import TrainResult

RESULT_FILE = "train_result.json"  # a member's metrics and stages: what a rerun that skips it reports


def member_events(progress: ProgressFn | None, member: int, members: int) -> ProgressFn | None:
    """A member's progress events tagged with `member`, its stage names prefixed so that the CLI's
    progress says which member trains (numbered as its folder and metrics: 0..M-1)."""
    if progress is None:
        return None

    def tagged(event: dict[str, Any]) -> None:
        event = {**event, "member": member}
        if isinstance(event.get("stage"), str):
            event["stage"] = f"member {member} of {members}: {event['stage']}"
        progress(event)

    return tagged


def save_member_result(folder: str, result: TrainResult) -> None:
    record = {"metrics": result.metrics, "stages": result.stages, "artifacts": result.artifacts}
    storage.write_text(f"{folder}/{RESULT_FILE}", json.dumps(record, indent=2))


def finished_member(
    folder: str, lineage: str, dataset_version: str, read_info: Callable[[str], Any]
) -> TrainResult | None:
    """The saved result of a member in `folder` trained for this plan (`lineage`, its model.json's plan
    digest) and dataset, or None; `read_info` reads the member's model.json (its kind's reader)."""
    try:
        info = read_info(folder)
        if info.plan_digest != lineage or info.dataset_version != dataset_version:
            return None
        saved = json.loads(storage.read_bytes(f"{folder}/{RESULT_FILE}"))
    except (FileNotFoundError, ValueError, OSError):
        return None
    return TrainResult(saved["metrics"], saved["stages"], saved["artifacts"])
