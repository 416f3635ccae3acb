"""Security rules over every pod and RBAC object that the chart (each values file) and the overlays render,
and over the chart's values files; each rule is also shown to catch a fixture with one planted violation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.deploy.k8s_validation import security
from tests.deploy.k8s_validation.fixtures import edit, good, remove, rendered
from tests.deploy.k8s_validation.pods import pod_templates
from tests.deploy.k8s_validation.render import Doc, Render, Target, all_targets, helm_targets

TRIGGER = "spec.triggers[0].template.argoWorkflow"
WORKFLOW = f"{TRIGGER}.source.resource.spec"
WF_CONTAINER = f"{WORKFLOW}.templates[0].container"
MONITOR = "spec.template.spec.containers[0]"


@pytest.fixture(scope="session", params=all_targets(), ids=lambda t: t.id)
def render(request: pytest.FixtureRequest) -> Render:
    target: Target = request.param
    return rendered(target)


def test_render_passes_every_security_rule(render: Render) -> None:
    errors = security.all_rules(render.docs)
    assert not errors, f"{render.name}:\n" + "\n".join(errors)


def test_render_has_pods_to_check(render: Render) -> None:
    """Guards the rules above against passing because the pod finder found nothing."""
    kinds = {pod.kind for pod in pod_templates(render.docs)}
    assert "Deployment" in kinds, kinds
    if any(d.get("kind") == "Sensor" for d in render.docs):
        assert "Sensor" in kinds, kinds


@pytest.mark.parametrize("values_file", [t.path for t in helm_targets()], ids=lambda p: p.name)
def test_values_file_holds_no_plaintext_secret(values_file: Path) -> None:
    values = yaml.safe_load(values_file.read_text()) or {}
    assert security.values_secrets(values, values_file.name) == []


def test_the_good_fixture_passes_every_rule() -> None:
    assert security.all_rules(good()) == []


Mutation = Callable[[list[Doc]], list[Doc]]


def _pods(rule: Callable[..., list[str]]) -> Callable[[list[Doc]], list[str]]:
    return lambda docs: rule(pod_templates(docs))


def _docs_pods(rule: Callable[..., list[str]]) -> Callable[[list[Doc]], list[str]]:
    return lambda docs: rule(docs, pod_templates(docs))


# (id, how to break the good fixture, the rule, the one violation it must report)
CASES: list[tuple[str, Mutation, Callable[[list[Doc]], list[str]], str]] = [
    (
        "pod-may-run-as-root",
        lambda d: edit(d, "Deployment", "rooivalk-monitor", "spec.template.spec.securityContext.runAsNonRoot"),
        _pods(security.pod_security),
        "Deployment/rooivalk-monitor: container monitor: spec.template.spec.securityContext.runAsNonRoot must be true",
    ),
    (
        "sensor-pod-without-seccomp",
        lambda d: edit(d, "Sensor", "rooivalk-retrain", "spec.template.securityContext.seccompProfile"),
        _pods(security.pod_security),
        "Sensor/rooivalk-retrain: container main: spec.template.securityContext.seccompProfile.type must be "
        "RuntimeDefault",
    ),
    (
        "host-network",
        lambda d: edit(d, "Deployment", "rooivalk-monitor", "spec.template.spec.hostNetwork", True),
        _pods(security.pod_security),
        "Deployment/rooivalk-monitor: spec.template.spec.hostNetwork must not be true",
    ),
    (
        "pod-spec-patch",
        lambda d: edit(d, "CronWorkflow", "rooivalk-retrain-nightly", "spec.workflowSpec.podSpecPatch", "{}"),
        _pods(security.pod_security),
        "CronWorkflow/rooivalk-retrain-nightly template submit: spec.workflowSpec.templates[0].podSpecPatch bypasses",
    ),
    (
        "writable-root-filesystem-in-a-triggered-workflow",
        lambda d: edit(d, "Sensor", "rooivalk-retrain", f"{WF_CONTAINER}.securityContext.readOnlyRootFilesystem", 0),
        _pods(security.container_security),
        f"Sensor/rooivalk-retrain {TRIGGER}.source.resource (Workflow) template submit: container main: "
        f"{WF_CONTAINER}.securityContext.readOnlyRootFilesystem must be true",
    ),
    (
        "privilege-escalation-in-the-eventbus",
        lambda d: edit(
            d,
            "EventBus",
            "default",
            "spec.jetstream.reloaderContainerTemplate",
            {
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "50m", "memory": "32Mi"}},
                "securityContext": {"readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
            },
        ),
        _pods(security.container_security),
        "EventBus/default: container reloaderContainerTemplate: spec.jetstream.reloaderContainerTemplate"
        ".securityContext.allowPrivilegeEscalation must be false",
    ),
    (
        "capabilities-kept-in-the-eventsource",
        lambda d: edit(d, "EventSource", "rooivalk-minio", "spec.template.container.securityContext.capabilities"),
        _pods(security.container_security),
        "EventSource/rooivalk-minio: container main: spec.template.container.securityContext.capabilities.drop "
        "must contain ALL",
    ),
    (
        "memory-limit-missing",
        lambda d: edit(
            d,
            "CronWorkflow",
            "rooivalk-retrain-nightly",
            "spec.workflowSpec.templates[0].container.resources.limits",
            {"cpu": "500m"},
        ),
        _pods(security.resources),
        "CronWorkflow/rooivalk-retrain-nightly template submit: container main: "
        "spec.workflowSpec.templates[0].container.resources.limits.memory is not set",
    ),
    (
        "image-latest",
        lambda d: edit(d, "Deployment", "rooivalk-monitor", f"{MONITOR}.image", "ghcr.io/rooivalk/rooivalk-cpu:latest"),
        _docs_pods(security.images_pinned),
        "Deployment/rooivalk-monitor: container monitor: spec.template.spec.containers[0].image: image "
        "'ghcr.io/rooivalk/rooivalk-cpu:latest' uses :latest",
    ),
    (
        "image-without-tag",
        lambda d: edit(
            d,
            "CronWorkflow",
            "rooivalk-retrain-nightly",
            "spec.workflowSpec.templates[0].container.image",
            "localhost:5000/rooivalk-cpu",
        ),
        _docs_pods(security.images_pinned),
        "CronWorkflow/rooivalk-retrain-nightly template submit: container main: "
        "spec.workflowSpec.templates[0].container.image: image 'localhost:5000/rooivalk-cpu' has no tag",
    ),
    (
        "eventbus-version-unpinned",
        lambda d: edit(d, "EventBus", "default", "spec.jetstream.version", "latest"),
        _docs_pods(security.images_pinned),
        "EventBus/default: spec.jetstream.version must name a NATS version",
    ),
    (
        "secret-with-data",
        lambda d: [*d, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"}, "stringData": {"k": "v"}}],
        _docs_pods(security.plaintext_secrets),
        "Secret/s3: a Secret with data/stringData puts a credential in the manifests",
    ),
    (
        "credential-in-env-value",
        lambda d: edit(
            d,
            "Deployment",
            "rooivalk-monitor",
            f"{MONITOR}.env[1]",
            {"name": "AWS_SECRET_ACCESS_KEY", "value": "minio123"},
        ),
        _docs_pods(security.plaintext_secrets),
        f"Deployment/rooivalk-monitor: container monitor: {MONITOR}.env[1] AWS_SECRET_ACCESS_KEY has a literal value",
    ),
    (
        "password-in-a-url",
        lambda d: edit(
            d,
            "Deployment",
            "rooivalk-monitor",
            f"{MONITOR}.env[2]",
            {"name": "MLFLOW_BACKEND_STORE_URI", "value": "postgresql://mlflow:hunter2@db:5432/mlflow"},
        ),
        _docs_pods(security.plaintext_secrets),
        f"Deployment/rooivalk-monitor: {MONITOR}.env[2].value: a URL with user:password@",
    ),
    (
        "sensor-may-read-workflows",
        lambda d: edit(d, "Role", "rooivalk-sensor", "rules[0].verbs", ["create", "get"]),
        security.sensor_rbac,
        "Role/rooivalk-sensor: rules[0]",
    ),
    (
        "sensor-without-rolebinding",
        lambda d: remove(d, "RoleBinding", "rooivalk-sensor"),
        security.sensor_rbac,
        "Sensor/rooivalk-retrain: ServiceAccount rooivalk-sensor has no RoleBinding",
    ),
    (
        "wildcard-verb",
        lambda d: edit(d, "Role", "rooivalk-submitter", "rules[0].verbs", ["*"]),
        security.least_privilege,
        "Role/rooivalk-submitter: rules[0].verbs has a wildcard",
    ),
    (
        "unjustified-clusterrole",
        lambda d: [
            *d,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "rooivalk"},
                "rules": [],
            },
        ],
        security.least_privilege,
        "ClusterRole/rooivalk: cluster-scoped RBAC needs a justification",
    ),
    (
        "default-serviceaccount",
        lambda d: edit(d, "Deployment", "rooivalk-monitor", "spec.template.spec.serviceAccountName"),
        _pods(security.own_service_accounts),
        "Deployment/rooivalk-monitor: spec.template.spec.serviceAccountName is unset (the default account)",
    ),
    (
        "serviceaccount-shared-with-a-workflow",
        lambda d: edit(
            d, "CronWorkflow", "rooivalk-retrain-nightly", "spec.workflowSpec.serviceAccountName", "rooivalk-sensor"
        ),
        _pods(security.own_service_accounts),
        "ServiceAccount rooivalk-sensor is shared by CronWorkflow/rooivalk-retrain-nightly, Sensor/rooivalk-retrain",
    ),
    (
        "pod-outside-every-networkpolicy",
        lambda d: edit(
            remove(d, "NetworkPolicy", "rooivalk-default-deny"),
            "NetworkPolicy",
            "rooivalk-monitor",
            "spec.podSelector",
            {"matchExpressions": [{"key": "controller", "operator": "Exists"}]},
        ),
        lambda d: [e for e in _docs_pods(security.network_policy_coverage)(d) if "Deployment" in e],
        "Deployment/rooivalk-monitor: no NetworkPolicy selects its pod",
    ),
]


@pytest.mark.parametrize(("mutate", "rule", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_planted_violation_is_reported(
    mutate: Mutation, rule: Callable[[list[Doc]], list[str]], expected: str
) -> None:
    errors = rule(mutate(good()))
    assert len(errors) == 1, errors
    assert errors[0].startswith(expected), errors


def test_argo_controller_labels_count_for_networkpolicies() -> None:
    """Workflow pods carry workflows.argoproj.io/workflow (value unknown offline): Exists selects them."""
    docs = remove(good(), "NetworkPolicy", "rooivalk-default-deny")
    selector = {"matchExpressions": [{"key": "workflows.argoproj.io/workflow", "operator": "Exists"}]}
    docs = edit(docs, "NetworkPolicy", "rooivalk-monitor", "spec.podSelector", selector)
    uncovered = security.network_policy_coverage(docs, pod_templates(docs))
    assert uncovered, "the Sensor, EventSource and EventBus pods are no longer covered"
    assert not [e for e in uncovered if "Workflow" in e.split(":")[0]], uncovered


def test_values_secrets_flags_a_literal_password_but_not_a_secret_reference() -> None:
    values = {
        "minio": {"rootPassword": "minio123", "existingSecret": "rooivalk-s3"},
        "s3": {"accessKey": {"name": "rooivalk-s3", "key": "AWS_ACCESS_KEY_ID"}},
        "mlflow": {"backendStore": {"uri": "postgresql://mlflow:hunter2@db/mlflow"}},
    }
    assert security.values_secrets(values, "values-x.yaml") == [
        "values-x.yaml: minio.rootPassword: a credential in plain text; reference an existing Secret",
        "values-x.yaml: mlflow.backendStore.uri: a URL with user:password@",
    ]


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("ghcr.io/rooivalk/rooivalk-cpu:0.1.0", None),
        ("localhost:5000/rooivalk-cpu@sha256:" + "0" * 64, None),
        ("nats:2.10.10-alpine", None),
        ("localhost:5000/rooivalk-cpu", "image 'localhost:5000/rooivalk-cpu' has no tag (that means :latest)"),
        ("minio/minio", "image 'minio/minio' has no tag (that means :latest)"),
        ("minio/minio:latest", "image 'minio/minio:latest' uses :latest"),
        ("{{inputs.parameters.image}}", "image '{{inputs.parameters.image}}' is chosen at run time"),
        ("", "has no image"),
    ],
)
def test_image_pinning(image: str, problem: str | None) -> None:
    assert security.image_problem(image) == problem
