"""The tracking buffer's replay table: each buffered op is registered by the module that defines it, so
tracking (the bottom layer) replays a model registration without importing the layers that load models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rooivalk.tracking import buffer


def _ops_after(imports: str) -> list[str]:
    code = f"{imports}; from rooivalk.tracking import buffer; print(','.join(sorted(buffer._REPLAYABLE)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.strip().split(",")


def test_tracking_alone_replays_its_run_calls_and_registration_comes_with_the_steps_layer() -> None:
    run_ops = ["close_pipeline_run", "create_pipeline_run", "finish_run", "log_artifact", "log_metrics"]
    run_ops += ["open_step_run", "set_tags"]
    assert _ops_after("import rooivalk.tracking") == sorted(run_ops)
    assert _ops_after("import rooivalk.steps.registration") == sorted([*run_ops, "register"])


def test_a_buffered_op_replays_through_its_own_function_and_an_unknown_one_is_refused() -> None:
    calls: list[dict[str, Any]] = []

    @buffer.buffered("test_echo", lambda _args: None)
    def echo(tracking_uri: str, value: int) -> int:
        calls.append({"uri": tracking_uri, "value": value})
        return value * 2

    try:
        assert buffer.replay("test_echo", "sqlite:///unused.db", {"value": 21}, None) == 42
    finally:
        del buffer._REPLAYABLE["test_echo"]  # the table is process-wide: leave no test op in it
    assert calls == [{"uri": "sqlite:///unused.db", "value": 21}]
    with pytest.raises(ValueError, match="'never_defined'.*rooivalk.steps.registration"):
        buffer.replay("never_defined", "sqlite:///unused.db", {}, None)


def test_a_replayed_run_creation_is_found_by_its_offline_id_the_second_time(tmp_path: Path) -> None:
    from rooivalk import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = {"name": "replay-test", "data": {"source": str(tmp_path), "format": "idx"}, "model": {"architecture": "x"}}
    offline = buffer.new_offline_id()
    args = {"plan_dict": plan, "run_key": "k1", "pipeline": "p"}
    first = buffer.replay("create_pipeline_run", uri, args, offline)
    second = buffer.replay("create_pipeline_run", uri, args, offline)
    assert first == second
    client = tracking.client_for(uri)
    assert client.get_run(first).data.tags[buffer.OFFLINE_TAG] == offline
