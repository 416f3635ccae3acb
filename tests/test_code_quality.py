"""Lint and types are part of the suite (DESIGN.md: ruff E,W,F,I,B,UP,SIM,PT,C90 and mypy on src/)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


LINTED = ("src", "components", "pipelines", "tests", "benchmarks", "manifests", "scripts")


def test_ruff_lint_and_format() -> None:
    lint = _run(str(BIN / "ruff"), "check", *LINTED)
    assert lint.returncode == 0, lint.stdout
    fmt = _run(str(BIN / "ruff"), "format", "--check", *LINTED)
    assert fmt.returncode == 0, fmt.stdout


@pytest.mark.slow
def test_mypy_strict_on_src() -> None:
    result = _run(str(BIN / "mypy"), "src")
    assert result.returncode == 0, result.stdout[-5000:]
