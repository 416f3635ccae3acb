"""The generated monitoring files: checked in up to date, deterministic, and `--check` names stale ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rooivalk.monitoring import assets
from rooivalk.monitoring.alert_rules import duration_seconds, prometheus_rule_groups

from ._tools import REPO, run


def test_checked_in_files_equal_the_generator_output() -> None:
    assert assets.stale_assets(REPO) == [], "run `make monitoring-assets` and commit the result"
    result = run(sys.executable, "-m", "rooivalk.monitoring.assets", "--check")
    assert result.returncode == 0, result.stderr


def test_generation_is_deterministic_with_sorted_json() -> None:
    first, second = assets.render_assets(), assets.render_assets()
    assert first == second
    for path in (assets.DASHBOARD_PATH, assets.HELM_DASHBOARD_PATH):
        text = first[path]
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_check_names_stale_and_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    written = assets.write_assets(tmp_path)
    assert sorted(path.relative_to(tmp_path).as_posix() for path in written) == sorted(assets.render_assets())
    assert assets.write_assets(tmp_path) == []  # nothing changed, nothing rewritten
    assert assets.main(["--repo-dir", str(tmp_path), "--check"]) == 0

    rule = tmp_path / assets.RULE_PATH
    rule.write_text(rule.read_text().replace("for: 10m", "for: 1m"))
    (tmp_path / assets.HELM_DASHBOARD_PATH).unlink()
    capsys.readouterr()
    assert assets.main(["--repo-dir", str(tmp_path), "--check"]) == 1
    stderr = capsys.readouterr().err
    assert f"{assets.RULE_PATH} is stale" in stderr
    assert f"{assets.HELM_DASHBOARD_PATH} is stale" in stderr
    assert assets.DASHBOARD_PATH + " " not in stderr

    assert assets.main(["--repo-dir", str(tmp_path)]) == 0
    assert assets.stale_assets(tmp_path) == []


@pytest.mark.parametrize(("duration", "seconds"), [("45s", 45), ("30m", 1800), ("1h30m", 5400), ("2d", 172800)])
def test_duration_seconds(duration: str, seconds: int) -> None:
    assert duration_seconds(duration) == seconds


@pytest.mark.parametrize("duration", ["30", "1.5h", "30ms", "", "m30", "10 m"])
def test_duration_seconds_rejects_what_helm_cannot_convert(duration: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        duration_seconds(duration)


def test_rule_parameters_reach_the_rules() -> None:
    groups = {group["name"]: group["rules"] for group in prometheus_rule_groups("5m", "1h")["groups"]}
    drift, stale = groups["rooivalk-drift.alerts"]
    assert drift["alert"] == "RooivalkDataDrift"
    assert drift["for"] == "5m"
    assert "at least 5m" in drift["annotations"]["description"]
    assert stale["alert"] == "RooivalkDriftCheckStale"
    assert stale["expr"].endswith("> 3600")
    assert "1h" in stale["annotations"]["summary"]
    with pytest.raises(ValueError, match="soon"):
        prometheus_rule_groups(alert_for="soon")
