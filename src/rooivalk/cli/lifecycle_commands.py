"""`rooivalk approve` and `rooivalk deprecate`: the people's steps of a model version's lifecycle
(rooivalk.tracking.lifecycle). A refused step is one line on stderr, exit 2, and nothing changed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from rooivalk.cli.common import print_error, print_warning, stdout_console

T = TypeVar("T")

TrackingOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI, or a run folder holding mlflow.db (as `rooivalk run` writes); "
        "default: $MLFLOW_TRACKING_URI.",
    ),
]
NameArg = Annotated[str, typer.Argument(help="Registered model name.")]
VersionArg = Annotated[str, typer.Argument(help="Model version number.")]
ByOpt = Annotated[str, typer.Option("--by", help="Who approves (recorded with the date).")]
NoteOpt = Annotated[str, typer.Option("--note", help="Why, or what was reviewed (recorded).")]


def resolve_tracking_uri(given: str | None) -> str:
    """The URI to use: a run folder's sqlite database, the given URI, or $MLFLOW_TRACKING_URI."""
    uri = given or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        print_error("no tracking URI: give --tracking-uri (a URI or a run folder) or set MLFLOW_TRACKING_URI")
        raise typer.Exit(2)
    if "://" not in uri and Path(uri, "mlflow.db").is_file():
        return f"sqlite:///{Path(uri, 'mlflow.db').resolve()}"
    return uri


def registry_client(given: str | None) -> Any:
    """An MLflow client on the tracking URI (resolve_tracking_uri). These commands download a few small
    JSON files (record, plan, card): MLflow's progress bar per download would bury their answer on a
    terminal, so it is off unless MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR says otherwise."""
    from rooivalk.tracking.runs import client_for

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return client_for(resolve_tracking_uri(given))


def approve(
    name: NameArg, version: VersionArg, by: ByOpt = "", note: NoteOpt = "", tracking_uri: TrackingOpt = None
) -> None:
    """Release a validated model version: record the approver and date, move the alias `released` (and
    `champion` where promotion.require_approval held it back); the release it replaces is deprecated."""
    from rooivalk.tracking.lifecycle import approve as approve_version
    from rooivalk.tracking.registry import refresh_record

    client = registry_client(tracking_uri)
    result = _refused_as_exit(lambda: approve_version(client, name, version, by, note))
    said = [f"[green]released[/] {name} version {version}, approved by {by} at {result['approved_at']}"]
    promotion = None
    if result["champion"]:
        promotion = f"champion since its approval by {by} at {result['approved_at']}"
        said.append("it is now champion (promotion waited for this approval)")
        reference = _after_the_change(lambda: _refresh_monitoring_reference(client, name, version), "monitoring")
        if reference is not None:
            said.append(f"the drift monitor's reference is now its validation profile ({reference})")
    _after_the_change(lambda: refresh_record(client, name, version, promotion=promotion), "record")
    if result["deprecated"] is not None:
        _after_the_change(lambda: refresh_record(client, name, result["deprecated"]), "record")
        said.append(f"version {result['deprecated']} deprecated")
    stdout_console().print("; ".join(said), highlight=False)


def deprecate(
    name: NameArg, version: VersionArg, by: ByOpt = "", note: NoteOpt = "", tracking_uri: TrackingOpt = None
) -> None:
    """Withdraw a model version: it leaves the aliases `released` and `champion`."""
    from rooivalk.tracking.lifecycle import deprecate as deprecate_version
    from rooivalk.tracking.registry import refresh_record

    client = registry_client(tracking_uri)
    lost = _refused_as_exit(lambda: deprecate_version(client, name, version, by, note))
    _after_the_change(lambda: refresh_record(client, name, version), "record")
    left = f"; it is no longer {' or '.join(lost)}" if lost else ""
    stdout_console().print(f"[yellow]deprecated[/] {name} version {version} by {by}{left}", highlight=False)


def _refused_as_exit(change: Callable[[], T]) -> T:
    """The lifecycle change, or its refusal as one line on stderr and exit 2 (nothing was changed)."""
    from rooivalk.tracking.lifecycle import LifecycleError

    try:
        return change()
    except LifecycleError as error:
        print_error(str(error))
        raise typer.Exit(2) from None


def _after_the_change(step: Callable[[], T], what: str) -> T | None:
    """A step after the registry changed (the record rewritten, the monitor's reference refreshed): its
    failure is a warning that says the change stands, not an error that reads as if nothing changed."""
    try:
        return step()
    except Exception as error:  # noqa: BLE001 (the change is made; say what did not follow it)
        print_warning(f"the change is recorded in the registry, but its {what} was not updated: {error}")
        return None


def _refresh_monitoring_reference(client: Any, name: str, version: str) -> str | None:
    """What the register step does for a champion, done at approval when promotion waited for it: the
    version's evaluation reference profile becomes `monitoring.reference_uri` of the plan it was trained
    by (the pipeline run's plan.json), so the drift monitor compares production data with what the
    serving model was validated on. None when the plan names no reference URI."""
    import json
    import tempfile

    from rooivalk.plan import Plan
    from rooivalk.steps.retraining import refresh_reference

    found = client.get_model_version(name, version)
    with tempfile.TemporaryDirectory(prefix="rooivalk-approve-") as scratch:
        plan_file = client.download_artifacts(found.tags["rooivalk.parent_run_id"], "plan.json", scratch)
        plan = Plan.model_validate(json.loads(Path(plan_file).read_text()))
        if not plan.monitoring.reference_uri:
            return None
        return refresh_reference(plan, client.download_artifacts(found.run_id, "evaluation", scratch), promoted=True)
