"""A registered version's record and lifecycle on a real MLflow store (sqlite): registration writes the
record (tags, model_record.json, description, ONNX signature) and moves draft -> training -> validated
only when every requirement passed; `rooivalk approve` releases a validated version, refuses one that
failed a requirement or has no approver (nothing changed), deprecates the release it replaces, and
gives the champion alias where promotion.require_approval held it back; a version that failed a
requirement never becomes champion; a retried registration deprecates what its dead attempt left."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from rooivalk.cli.app import app
from rooivalk.tracking import lifecycle
from rooivalk.tracking.model_record import RECORD_FILE
from rooivalk.tracking.registry import register_model
from tests.unit.tracking.registered_versions import lifecycle_plan as _plan
from tests.unit.tracking.registered_versions import register_version as _register


def _approve(uri: str, *args: str) -> Any:
    return CliRunner().invoke(app, ["approve", *args, "--tracking-uri", uri])


def test_registration_records_the_version_and_approval_releases_it(tmp_path: Path) -> None:
    import mlflow.models

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    name, version = _register(tmp_path, _plan(uri), 0.9, "a")
    client = MlflowClient(uri)
    found = client.get_model_version(name, version)
    assert [step["status"] for step in lifecycle.history_of(found)] == ["draft", "training", "validated"]
    assert found.tags["rooivalk.status"] == "validated"
    assert found.tags["rooivalk.requirement.REQ-REC"] == "pass 0.95"
    assert found.tags["rooivalk.requirement.REQ-LAT"] == "pass 3.2"  # an export figure, measured at registration
    assert (found.tags["rooivalk.samples.train"], found.tags["rooivalk.previous_version"]) == ("60", "none")
    assert "REQ-REC: drones are found | test_recall[drone] >= 0.9 | 0.9500 | pass" in found.description
    signature = mlflow.models.get_model_info(f"models:/{name}/{version}").signature
    assert signature.inputs.input_names() == ["inputs"]
    assert signature.inputs.inputs[0].shape == (-1, 4)
    record = json.loads((Path(client.download_artifacts(found.run_id, RECORD_FILE))).read_text())
    assert record["training"]["train_model"]["epochs"] == 5
    assert record["training"]["train_model"]["gpu"] == "none"
    assert record["data"]["samples"] == {"train": 60, "val": 20, "test": 20}
    assert record["artifacts"]["onnx_files"] == [f"runs:/{found.run_id}/onnx/variants/model/model_fp32.onnx"]

    refused = _approve(uri, name, version, "--by", " ")
    assert refused.exit_code == 2
    assert "needs the approver's name" in refused.output
    assert client.get_model_version(name, version).tags["rooivalk.status"] == "validated"  # nothing changed

    done = _approve(uri, name, version, "--by", "A. Engineer", "--note", "reviewed the report")
    assert done.exit_code == 0, done.output
    released = client.get_model_version_by_alias(name, "released")
    assert str(released.version) == version
    assert (released.tags["rooivalk.status"], released.tags["rooivalk.approved_by"]) == ("released", "A. Engineer")
    record = json.loads((Path(client.download_artifacts(found.run_id, RECORD_FILE))).read_text())
    assert record["status"] == "released"
    assert record["approval"]["by"] == "A. Engineer"
    assert "approved by A. Engineer" in released.description

    # A second version, approved, takes the release; the first is deprecated; approving a released one is refused.
    name, second = _register(tmp_path, _plan(uri), 0.95, "b")
    assert client.get_model_version(name, second).tags["rooivalk.previous_version"] == version
    assert _approve(uri, name, second, "--by", "B. Lead").exit_code == 0
    assert client.get_model_version(name, version).tags["rooivalk.status"] == "deprecated"
    again = _approve(uri, name, version, "--by", "B. Lead")
    assert again.exit_code == 2
    assert "is deprecated: only a validated version can be approved" in again.output


def test_a_failed_requirement_leaves_the_version_unvalidated_and_unapprovable(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    name, version = _register(tmp_path, _plan(uri, recall_min=0.99), 0.9, "a")
    client = MlflowClient(uri)
    found = client.get_model_version(name, version)
    assert found.tags["rooivalk.status"] == "training"
    assert found.tags["rooivalk.requirement.REQ-REC"] == "fail 0.95"
    refused = _approve(uri, name, version, "--by", "A. Engineer")
    assert refused.exit_code == 2
    assert "did not pass its requirements (REQ-REC): it cannot be approved" in refused.output
    after = client.get_model_version(name, version)
    assert after.tags == found.tags  # nothing changed in the registry
    with pytest.raises(lifecycle.LifecycleError, match="is training: it may move to validated, deprecated, not"):
        lifecycle.move(client, name, version, "released", "someone")
    assert after.aliases == ["challenger"]  # not validated: never champion, whatever it scores
    assert after.tags["rooivalk.promotion"].count("not promoted: not validated: REQ-REC failed") == 1


def test_what_approval_refuses_and_what_deprecation_and_a_retried_registration_leave(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = _plan(uri)
    name, version = _register(tmp_path, plan, 0.9, "a")
    client = MlflowClient(uri)
    # A version registered before records and lifecycles (tagged validated, as registration used to): refused.
    run = client.create_run(client.get_experiment_by_name("rooivalk").experiment_id)
    _, old = register_model(uri, run.info.run_id, torch.nn.Linear(4, 3), name, {"rooivalk.status": "validated"})
    refused = _approve(uri, name, old, "--by", "A. Engineer")
    assert refused.exit_code == 2
    assert "has no model record" in refused.output
    assert client.get_model_version(name, old).tags == {"rooivalk.status": "validated"}  # nothing changed
    # Deprecating the champion takes its aliases away.
    gone = CliRunner().invoke(app, ["deprecate", name, version, "--by", "A. Engineer", "--tracking-uri", uri])
    assert gone.exit_code == 0, gone.output
    assert "it is no longer champion" in gone.output
    assert client.get_model_version(name, version).aliases == ["challenger"]
    # A registration retried in the same pipeline run deprecates what the dead attempt left unfinished.
    left = client.get_model_version(name, version)
    parent = left.tags["rooivalk.parent_run_id"]
    _, stuck = register_model(uri, run.info.run_id, torch.nn.Linear(4, 3), name, {"rooivalk.parent_run_id": parent})
    lifecycle.move(client, name, stuck, "draft", "test", "a pod that died here")
    _, again = _register(tmp_path, plan, 0.9, "b", parent=parent)
    history = lifecycle.history_of(client.get_model_version(name, stuck))
    assert (history[-1]["status"], history[-1]["note"]) == (
        "deprecated",
        f"registration retried: version {again} replaces it",
    )
    assert (
        client.get_model_version(name, version).tags["rooivalk.status"] == "deprecated"
    )  # finished: not touched again


def test_promotion_that_requires_approval_waits_for_it(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    reference = tmp_path / "monitoring" / "reference"
    plan = _plan(uri, require_approval=True, reference_uri=str(reference))
    name, first = _register(tmp_path, plan, 0.8, "a")
    client = MlflowClient(uri)
    aliases = client.get_registered_model(name).aliases
    assert {alias: str(v) for alias, v in aliases.items()} == {"challenger": first}  # no champion until approved
    assert _approve(uri, name, first, "--by", "A. Engineer").exit_code == 0
    assert str(client.get_model_version_by_alias(name, "champion").version) == first
    assert json.loads((reference / "profile.json").read_text()) == {"registered": "a"}
    name, second = _register(tmp_path, plan, 0.9, "b")
    assert str(client.get_model_version_by_alias(name, "champion").version) == first  # beats it, but waits
    assert "awaiting approval" in client.get_model_version(name, second).tags["rooivalk.promotion"]
    assert json.loads((reference / "profile.json").read_text()) == {"registered": "a"}  # the monitor's too
    approved = _approve(uri, name, second, "--by", "A. Engineer")
    assert approved.exit_code == 0, approved.output
    assert "it is now champion" in approved.output
    assert str(client.get_model_version_by_alias(name, "champion").version) == second
    assert json.loads((reference / "profile.json").read_text()) == {"registered": "b"}
