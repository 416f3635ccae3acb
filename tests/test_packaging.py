"""The built wheel installs two import names, `rooivalk` (the core) and `rooivalk_kfp` (the KFP layer,
whose sources sit at the repository root as components/ and pipelines/), and nothing generic such as a
top-level `components` or `pipelines` package that would collide with other projects."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("wheel")
    build_dir = tmp_path_factory.mktemp("build")
    # --no-build-isolation: setuptools from this venv, nothing downloaded (setuptools' build/ is git-ignored).
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(REPO), "-w", str(out)],
        capture_output=True,
        text=True,
        env={"PATH": str(Path(sys.executable).parent), "TMPDIR": str(build_dir), "HOME": str(build_dir)},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = out.glob("rooivalk-*.whl")
    return zipfile.ZipFile(wheel).namelist()


def test_the_wheel_adds_no_top_level_name_but_its_own(wheel_names: list[str]) -> None:
    top_level = {name.split("/")[0] for name in wheel_names}
    assert top_level == {"rooivalk", "rooivalk_kfp", "rooivalk-0.1.0.dist-info"}


def test_the_kfp_layer_ships_under_rooivalk_kfp_with_its_plans(wheel_names: list[str]) -> None:
    shipped = set(wheel_names)
    for component in (REPO / "components").glob("*.py"):
        assert f"rooivalk_kfp/components/{component.name}" in shipped
    for pipeline in (REPO / "pipelines").glob("*.py"):
        assert f"rooivalk_kfp/pipelines/{pipeline.name}" in shipped
    for plan in (REPO / "pipelines" / "plans").glob("*.yaml"):
        assert f"rooivalk_kfp/pipelines/plans/{plan.name}" in shipped
