"""Cross-references: every name a rendered document uses (EventSources and events, EventBus, ServiceAccounts,
Secrets, ConfigMaps, Roles, Workflow parameters, selectors, ports) points at something that exists."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy.k8s_validation import crossref, workflow_params
from tests.deploy.k8s_validation.fixtures import edit, external_for, find, good, remove, rendered
from tests.deploy.k8s_validation.pods import UNKNOWN
from tests.deploy.k8s_validation.refs import external_objects
from tests.deploy.k8s_validation.render import REPO, Doc, Render, Target, all_targets, chart_values, helm_targets
from tests.deploy.k8s_validation.selectors import matches

EXTERNAL = {("Secret", "rooivalk-s3")}
TRIGGER = "spec.triggers[0].template.argoWorkflow"
WORKFLOW = f"{TRIGGER}.source.resource.spec"
# Where the docs may tell the user to create an object.
DOC_GLOBS = ("docs/**/*.md", "README.md", "helm/rooivalk/README.md", "helm/rooivalk/templates/NOTES.txt")


@pytest.fixture(scope="session", params=all_targets(), ids=lambda t: t.id)
def render(request: pytest.FixtureRequest) -> Render:
    target: Target = request.param
    return rendered(target)


def test_render_cross_references_resolve(render: Render) -> None:
    errors = crossref.all_checks(render.docs, external_for(render))
    assert not errors, f"{render.name}:\n" + "\n".join(errors)


def test_the_good_fixture_has_no_dangling_reference() -> None:
    assert crossref.all_checks(good(), EXTERNAL) == []


def missing_create_commands(external: set[tuple[str, str]], texts: list[str]) -> list[str]:
    """`Kind name` of each external object no `kubectl ... create secret|configmap ... NAME` line creates."""
    # Shell commands with backslash-continued lines joined.
    lines = [line for text in texts for line in text.replace("\\\n", " ").splitlines()]
    missing = []
    for kind, name in sorted(external):
        command = re.compile(rf"kubectl\b.*\bcreate\s+{kind.lower()}\b.*(?<![\w.-]){re.escape(name)}(?![\w.-])")
        if not any(command.search(line) for line in lines):
            missing.append(f"{kind} {name}")
    return missing


def test_the_docs_tell_the_user_to_create_every_external_object() -> None:
    """Each existingSecret/existingConfigMap of the chart values has a `kubectl create` line in the docs."""
    external: set[tuple[str, str]] = set()
    for target in helm_targets():
        external |= external_objects(chart_values(target.path))
    if not external:
        pytest.skip("the chart names no existingSecret/existingConfigMap")
    texts = [path.read_text() for glob in DOC_GLOBS for path in REPO.glob(glob)]
    missing = missing_create_commands(external, texts)
    assert not missing, f"no `kubectl create` for {missing} in {', '.join(DOC_GLOBS)}"


def test_a_create_command_must_name_the_object_and_its_kind() -> None:
    doc = "kubectl -n rooivalk create secret generic rooivalk-s3 \\\n  --from-literal=AWS_ACCESS_KEY_ID=...\n"
    external = {("Secret", "rooivalk-s3"), ("Secret", "rooivalk-s3-old"), ("ConfigMap", "rooivalk-s3")}
    assert missing_create_commands(external, [doc]) == ["ConfigMap rooivalk-s3", "Secret rooivalk-s3-old"]


Mutation = Callable[[list[Doc]], list[Doc]]
# (id, how to break the good fixture, the check, the one violation it must report)
CASES: list[tuple[str, Mutation, Callable[[list[Doc]], list[str]], str]] = [
    (
        "dependency-names-a-missing-eventsource",
        lambda d: edit(d, "Sensor", "rooivalk-retrain", "spec.dependencies[0].eventSourceName", "rooivalk-minoi"),
        crossref.sensor_dependencies,
        "Sensor/rooivalk-retrain: spec.dependencies[0].eventSourceName: no EventSource 'rooivalk-minoi'",
    ),
    (
        "dependency-names-an-undefined-event",
        lambda d: edit(d, "Sensor", "rooivalk-retrain", "spec.dependencies[0].eventName", "new_data"),
        crossref.sensor_dependencies,
        "Sensor/rooivalk-retrain: spec.dependencies[0].eventName: EventSource EventSource/rooivalk-minio defines "
        "no event 'new_data'",
    ),
    (
        "parameter-names-an-unknown-dependency",
        lambda d: edit(d, "Sensor", "rooivalk-retrain", f"{TRIGGER}.parameters[0].src.dependencyName", "data"),
        crossref.sensor_dependencies,
        f"Sensor/rooivalk-retrain: {TRIGGER}.parameters[0].src.dependencyName: 'data' is not a dependency",
    ),
    (
        "eventbus-missing",
        lambda d: edit(d, "EventSource", "rooivalk-minio", "spec.eventBusName", "rooivalk"),
        crossref.event_bus_refs,
        "EventSource/rooivalk-minio: spec.eventBusName: no EventBus 'rooivalk'",
    ),
    (
        "sensor-default-eventbus-missing",
        lambda d: remove(edit(d, "Sensor", "rooivalk-retrain", "spec.eventBusName"), "EventBus", "default"),
        lambda d: [e for e in crossref.event_bus_refs(d) if e.startswith("Sensor")],
        "Sensor/rooivalk-retrain: spec.eventBusName: no EventBus 'default'",
    ),
    (
        "serviceaccount-missing",
        lambda d: remove(d, "ServiceAccount", "rooivalk-submitter"),
        lambda d: [e for e in crossref.service_account_refs(d) if "CronWorkflow" in e],
        "CronWorkflow/rooivalk-retrain-nightly template submit: spec.workflowSpec.serviceAccountName: "
        "no ServiceAccount 'rooivalk-submitter'",
    ),
    (
        "secret-neither-rendered-nor-external",
        lambda d: edit(
            d,
            "Deployment",
            "rooivalk-monitor",
            "spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.name",
            "s3",
        ),
        lambda d: crossref.config_refs(d, EXTERNAL),
        "Deployment/rooivalk-monitor: spec.template.spec.containers[0].env[0]: Secret 's3' is neither rendered "
        "nor external",
    ),
    (
        "eventsource-credential-secret-missing",
        lambda d: edit(d, "EventSource", "rooivalk-minio", "spec.minio.new-data.secretKey.name", "minio"),
        lambda d: crossref.config_refs(d, EXTERNAL),
        "EventSource/rooivalk-minio: spec.minio.new-data.secretKey: Secret 'minio' is neither rendered nor external",
    ),
    (
        "configmap-missing",
        lambda d: remove(d, "ConfigMap", "rooivalk-plan"),
        lambda d: crossref.config_refs(d, EXTERNAL),
        "Deployment/rooivalk-monitor: spec.template.spec.volumes[0]: ConfigMap 'rooivalk-plan' is neither rendered",
    ),
    (
        "rolebinding-to-a-missing-role",
        lambda d: edit(d, "RoleBinding", "rooivalk-sensor", "roleRef.name", "rooivalk-sensors"),
        crossref.role_bindings,
        "RoleBinding/rooivalk-sensor: roleRef: no Role 'rooivalk-sensors' in the render",
    ),
    (
        "rolebinding-to-a-missing-serviceaccount",
        lambda d: edit(d, "RoleBinding", "rooivalk-sensor", "subjects[0].name", "sensor"),
        crossref.role_bindings,
        "RoleBinding/rooivalk-sensor: subjects[0]: no ServiceAccount 'sensor' in the render",
    ),
    (
        "trigger-dest-missing-in-the-workflow",
        lambda d: edit(
            d, "Sensor", "rooivalk-retrain", f"{TRIGGER}.parameters[0].dest", "spec.arguments.parameters.1.value"
        ),
        workflow_params.trigger_parameters,
        f"Sensor/rooivalk-retrain: {TRIGGER}.parameters[0].dest: 'spec.arguments.parameters.1.value' does not exist "
        "in the resource (spec.arguments.parameters has no item 1 (it has 1))",
    ),
    (
        "trigger-sets-a-parameter-the-workflow-ignores",
        lambda d: edit(d, "Sensor", "rooivalk-retrain", f"{WORKFLOW}.templates[0].container.args", ["submit"]),
        workflow_params.trigger_parameters,
        f"Sensor/rooivalk-retrain: {TRIGGER}.parameters[0].dest: sets Workflow parameter 'data_uri', which the "
        "Workflow never uses",
    ),
    (
        "workflow-declares-an-unused-parameter",
        lambda d: edit(d, "Sensor", "rooivalk-retrain", f"{WORKFLOW}.templates[0].container.args", ["submit"]),
        workflow_params.workflow_parameters,
        f"Sensor/rooivalk-retrain: {WORKFLOW}.arguments.parameters: 'data_uri' is declared but unused",
    ),
    (
        "workflow-uses-an-undeclared-parameter",
        lambda d: edit(
            d,
            "CronWorkflow",
            "rooivalk-retrain-nightly",
            "spec.workflowSpec.templates[0].container.args[1]",
            "{{workflow.parameters.plan}}",
        ),
        workflow_params.workflow_parameters,
        "CronWorkflow/rooivalk-retrain-nightly: spec.workflowSpec: uses {{workflow.parameters.plan}} but "
        "arguments.parameters lacks it",
    ),
    (
        "entrypoint-input-not-supplied",
        lambda d: edit(
            d,
            "CronWorkflow",
            "rooivalk-retrain-nightly",
            "spec.workflowSpec.templates[0].inputs",
            {"parameters": [{"name": "data_uri"}]},
        ),
        workflow_params.workflow_parameters,
        "CronWorkflow/rooivalk-retrain-nightly: spec.workflowSpec: the entrypoint template needs input 'data_uri'",
    ),
    (
        "service-selects-no-pod",
        lambda d: edit(d, "Service", "rooivalk-monitor", "spec.selector", {"app.kubernetes.io/component": "monitr"}),
        crossref.service_selectors,
        "Service/rooivalk-monitor: spec.selector {'app.kubernetes.io/component': 'monitr'} matches no pod",
    ),
    (
        "service-targets-a-missing-container-port",
        lambda d: edit(d, "Service", "rooivalk-monitor", "spec.ports[0].targetPort", "metrics"),
        crossref.service_selectors,
        "Service/rooivalk-monitor: spec.ports[0].targetPort: no container port named 'metrics'",
    ),
    (
        "servicemonitor-port-name-missing",
        lambda d: edit(d, "ServiceMonitor", "rooivalk-monitor", "spec.endpoints[0].port", "metrics"),
        crossref.service_monitors,
        "ServiceMonitor/rooivalk-monitor: spec.endpoints[0].port: 'metrics' is not a port name of "
        "Service/rooivalk-monitor",
    ),
    (
        "servicemonitor-selects-no-service",
        lambda d: edit(d, "ServiceMonitor", "rooivalk-monitor", "spec.selector.matchLabels", {"app": "monitor"}),
        crossref.service_monitors,
        "ServiceMonitor/rooivalk-monitor: spec.selector matches no Service in the render",
    ),
    (
        "networkpolicy-selects-no-pod",
        lambda d: edit(d, "NetworkPolicy", "rooivalk-monitor", "spec.podSelector.matchLabels", {"app": "monitor"}),
        crossref.network_policy_selectors,
        "NetworkPolicy/rooivalk-monitor: spec.podSelector {'matchLabels': {'app': 'monitor'}} selects no pod",
    ),
]


@pytest.mark.parametrize(("mutate", "check", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_planted_dangling_reference_is_reported(
    mutate: Mutation, check: Callable[[list[Doc]], list[str]], expected: str
) -> None:
    errors = check(mutate(good()))
    assert len(errors) == 1, errors
    assert errors[0].startswith(expected), errors


def test_a_parameter_the_entrypoint_takes_as_input_counts_as_used() -> None:
    """Argo hands workflow arguments to the entrypoint's inputs of the same name."""
    docs = edit(
        good(), "Sensor", "rooivalk-retrain", f"{WORKFLOW}.templates[0].inputs", {"parameters": [{"name": "data_uri"}]}
    )
    docs = edit(
        docs,
        "Sensor",
        "rooivalk-retrain",
        f"{WORKFLOW}.templates[0].container.args[7]",
        "data_uri={{inputs.parameters.data_uri}}",
    )
    assert workflow_params.workflow_parameters(docs) == workflow_params.trigger_parameters(docs) == []
    assert "inputs.parameters.data_uri" in str(find(docs, "Sensor", "rooivalk-retrain"))


def test_sjson_dest_paths() -> None:
    workflow = {"spec": {"arguments": {"parameters": [{"name": "a", "value": ""}]}, "x.y": 1}}
    assert workflow_params.resolve_dest(workflow, "spec.arguments.parameters.0.value") is None
    assert workflow_params.resolve_dest(workflow, "spec.arguments.parameters.-1") is None  # append
    assert workflow_params.resolve_dest(workflow, "spec.x\\.y") is None  # an escaped dot is part of the key
    assert workflow_params.resolve_dest(workflow, "spec.arguments.parameters.0.valu") == (
        "spec.arguments.parameters.0 has no key 'valu'"
    )


@pytest.mark.parametrize(
    ("selector", "selected"),
    [
        ({}, True),
        ({"app": "monitor"}, True),
        ({"app": "mlflow"}, False),
        (
            {
                "matchLabels": {"app": "monitor"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}],
            },
            True,
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, False),
        ({"matchExpressions": [{"key": "gone", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "workflows.argoproj.io/workflow", "operator": "Exists"}]}, True),
        ({"matchLabels": {"workflows.argoproj.io/workflow": "rooivalk-x"}}, False),  # its value is set at run time
    ],
)
def test_label_selectors(selector: dict[str, Any], selected: bool) -> None:
    labels = {"app": "monitor", "tier": "a", "workflows.argoproj.io/workflow": UNKNOWN}
    assert matches(selector, labels) is selected
