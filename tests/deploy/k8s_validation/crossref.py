"""Cross-reference checks: every name one document uses points at something the render (or the user) makes.

Each check takes the documents of one render and returns violations (strings naming Kind/name, the path
and the dangling name). Namespaces: a document without metadata.namespace lives in the release namespace,
so two documents are in the same namespace unless both set different ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .pods import PodTemplate, pod_templates
from .refs import AUTO_CONFIGMAPS, references
from .render import Doc
from .schema import label
from .selectors import matches
from .workflow_params import trigger_parameters, workflow_parameters

Docs = tuple[Doc, ...] | list[Doc]
# EventSourceSpec keys that are settings, not maps of event name -> event configuration.
EVENTSOURCE_SETTINGS = frozenset({"eventBusName", "template", "service", "replicas"})


def _ns(doc: Doc) -> str | None:
    return (doc.get("metadata") or {}).get("namespace")


def _same_ns(a: str | None, b: str | None) -> bool:
    return a is None or b is None or a == b


def _named(docs: Docs, kind: str) -> dict[str, Doc]:
    return {(d.get("metadata") or {}).get("name", ""): d for d in docs if d.get("kind") == kind}


def _exists(docs: Docs, kind: str, name: str, namespace: str | None) -> bool:
    return any(
        d.get("kind") == kind and (d.get("metadata") or {}).get("name") == name and _same_ns(_ns(d), namespace)
        for d in docs
    )


def event_names(eventsource: Doc) -> set[str]:
    """Event names an EventSource defines (the keys of its minio/sqs/webhook/... maps)."""
    spec = eventsource.get("spec") or {}
    names: set[str] = set()
    for key, value in spec.items():
        if key not in EVENTSOURCE_SETTINGS and isinstance(value, dict):
            names |= set(value)
    return names


def sensor_dependencies(docs: Docs) -> list[str]:
    """Dependencies name a rendered EventSource and one of its events; parameters name a dependency."""
    errors = []
    sources = _named(docs, "EventSource")
    for sensor in (d for d in docs if d.get("kind") == "Sensor"):
        spec = sensor.get("spec") or {}
        dep_names = set()
        for index, dep in enumerate(spec.get("dependencies") or []):
            where = f"{label(sensor)}: spec.dependencies[{index}]"
            dep_names.add(dep.get("name"))
            source = sources.get(dep.get("eventSourceName", ""))
            if source is None or not _same_ns(_ns(source), _ns(sensor)):
                errors.append(f"{where}.eventSourceName: no EventSource {dep.get('eventSourceName')!r} in the render")
            elif dep.get("eventName") not in event_names(source):
                errors.append(
                    f"{where}.eventName: EventSource {label(source)} defines no event {dep.get('eventName')!r} "
                    f"(it defines {sorted(event_names(source))})"
                )
        for path, params in _trigger_parameter_lists(sensor):
            for index, param in enumerate(params):
                dep = ((param or {}).get("src") or {}).get("dependencyName")
                if dep not in dep_names:
                    errors.append(
                        f"{label(sensor)}: {path}[{index}].src.dependencyName: {dep!r} is not a dependency "
                        f"of this Sensor ({sorted(n for n in dep_names if n)})"
                    )
    return errors


def _trigger_parameter_lists(sensor: Doc) -> Iterable[tuple[str, list[Any]]]:
    for index, trigger in enumerate((sensor.get("spec") or {}).get("triggers") or []):
        trigger = trigger or {}
        yield f"spec.triggers[{index}].parameters", trigger.get("parameters") or []
        for key, body in (trigger.get("template") or {}).items():
            if isinstance(body, dict) and isinstance(body.get("parameters"), list):
                yield f"spec.triggers[{index}].template.{key}.parameters", body["parameters"]


def event_bus_refs(docs: Docs) -> list[str]:
    """The EventBus every Sensor and EventSource uses (`eventBusName`, default "default") is rendered."""
    errors = []
    for doc in docs:
        if doc.get("kind") in ("Sensor", "EventSource"):
            bus = (doc.get("spec") or {}).get("eventBusName") or "default"
            if not _exists(docs, "EventBus", bus, _ns(doc)):
                errors.append(f"{label(doc)}: spec.eventBusName: no EventBus {bus!r} in the render")
    return errors


def service_account_refs(docs: Docs, pods: list[PodTemplate] | None = None) -> list[str]:
    """Every serviceAccountName (pods, Workflows, CronWorkflows, Sensor/EventSource templates) is rendered."""
    errors = []
    for pod in pods if pods is not None else pod_templates(docs):
        account = pod.service_account
        if account and not _exists(docs, "ServiceAccount", account, pod.namespace):
            errors.append(f"{pod.owner}: {pod.account_field}: no ServiceAccount {account!r} in the render")
    return errors


def config_refs(docs: Docs, external: set[tuple[str, str]], pods: list[PodTemplate] | None = None) -> list[str]:
    """Referenced Secrets and ConfigMaps are rendered or external: (kind, name) the user creates."""
    errors = []
    for ref in references(docs, pods if pods is not None else pod_templates(docs)):
        if _exists(docs, ref.kind, ref.name, None):
            continue
        if (ref.kind, ref.name) in external:
            continue
        if ref.kind == "ConfigMap" and ref.name in AUTO_CONFIGMAPS:
            continue
        known = sorted(name for kind, name in external if kind == ref.kind)
        errors.append(f"{ref.where}: {ref.kind} {ref.name!r} is neither rendered nor external {known}")
    return errors


def role_bindings(docs: Docs) -> list[str]:
    """RoleBindings/ClusterRoleBindings bind rendered Roles and rendered ServiceAccounts."""
    errors = []
    for binding in (d for d in docs if d.get("kind") in ("RoleBinding", "ClusterRoleBinding")):
        ref = binding.get("roleRef") or {}
        if not _exists(docs, str(ref.get("kind")), str(ref.get("name")), _ns(binding)):
            errors.append(f"{label(binding)}: roleRef: no {ref.get('kind')} {ref.get('name')!r} in the render")
        for index, subject in enumerate(binding.get("subjects") or []):
            if subject.get("kind") == "ServiceAccount" and not _exists(
                docs, "ServiceAccount", str(subject.get("name")), subject.get("namespace") or _ns(binding)
            ):
                errors.append(
                    f"{label(binding)}: subjects[{index}]: no ServiceAccount {subject.get('name')!r} in the render"
                )
    return errors


# --- selectors ------------------------------------------------------------------------------------------


def _container_ports(pod: PodTemplate) -> set[str]:
    ports = set()
    for container in pod.containers:
        for port in container.spec.get("ports") or []:
            ports |= {str(port.get("name")), str(port.get("containerPort"))}
    return ports


def service_selectors(docs: Docs, pods: list[PodTemplate] | None = None) -> list[str]:
    """A Service's selector matches some pod; a named targetPort is a container port of those pods."""
    pods = pods if pods is not None else pod_templates(docs)
    errors = []
    for svc in (d for d in docs if d.get("kind") == "Service"):
        selector = (svc.get("spec") or {}).get("selector")
        if not selector:
            continue  # ExternalName or hand-made Endpoints
        selected = [p for p in pods if _same_ns(p.namespace, _ns(svc)) and matches(selector, p.labels)]
        if not selected:
            errors.append(f"{label(svc)}: spec.selector {selector} matches no pod in the render")
            continue
        ports = set().union(*(_container_ports(p) for p in selected))
        for index, port in enumerate((svc.get("spec") or {}).get("ports") or []):
            target = port.get("targetPort")
            if isinstance(target, str) and target not in ports:
                errors.append(
                    f"{label(svc)}: spec.ports[{index}].targetPort: no container port named {target!r} in the "
                    f"pods it selects ({', '.join(p.owner for p in selected)})"
                )
    return errors


def service_monitors(docs: Docs, pods: list[PodTemplate] | None = None) -> list[str]:
    """A ServiceMonitor selects a rendered Service that has each endpoint's port; a PodMonitor, pods."""
    errors = []
    services = [d for d in docs if d.get("kind") == "Service"]
    for monitor in (d for d in docs if d.get("kind") == "ServiceMonitor"):
        spec = monitor.get("spec") or {}
        any_ns = bool((spec.get("namespaceSelector") or {}).get("any"))
        selected = [
            s
            for s in services
            if (any_ns or _same_ns(_ns(s), _ns(monitor)))
            and matches(spec.get("selector") or {}, (s.get("metadata") or {}).get("labels") or {})
        ]
        if not selected:
            errors.append(f"{label(monitor)}: spec.selector matches no Service in the render")
            continue
        names = {str(p.get("name")) for s in selected for p in (s.get("spec") or {}).get("ports") or []}
        targets = {str(p.get("targetPort")) for s in selected for p in (s.get("spec") or {}).get("ports") or []}
        for index, endpoint in enumerate(spec.get("endpoints") or []):
            if "port" in endpoint and str(endpoint["port"]) not in names:
                errors.append(
                    f"{label(monitor)}: spec.endpoints[{index}].port: {endpoint['port']!r} is not a port name of "
                    f"{', '.join(label(s) for s in selected)} ({sorted(names)})"
                )
            if "targetPort" in endpoint and str(endpoint["targetPort"]) not in targets:
                errors.append(f"{label(monitor)}: spec.endpoints[{index}].targetPort: no Service port targets it")
    pods = pods if pods is not None else pod_templates(docs)
    for monitor in (d for d in docs if d.get("kind") == "PodMonitor"):
        spec = monitor.get("spec") or {}
        chosen = [p for p in pods if matches(spec.get("selector") or {}, p.labels)]
        if not chosen:
            errors.append(f"{label(monitor)}: spec.selector matches no pod in the render")
            continue
        ports = set().union(*(_container_ports(p) for p in chosen))
        for index, endpoint in enumerate(spec.get("podMetricsEndpoints") or []):
            if "port" in endpoint and str(endpoint["port"]) not in ports:
                errors.append(f"{label(monitor)}: spec.podMetricsEndpoints[{index}].port: no such container port")
    return errors


def network_policy_selectors(docs: Docs, pods: list[PodTemplate] | None = None) -> list[str]:
    """Each NetworkPolicy's podSelector selects at least one pod of the render."""
    pods = pods if pods is not None else pod_templates(docs)
    errors = []
    for policy in (d for d in docs if d.get("kind") == "NetworkPolicy"):
        selector = (policy.get("spec") or {}).get("podSelector") or {}
        if not any(_same_ns(p.namespace, _ns(policy)) and matches(selector, p.labels) for p in pods):
            errors.append(f"{label(policy)}: spec.podSelector {selector} selects no pod in the render")
    return errors


def all_checks(docs: Docs, external: set[tuple[str, str]]) -> list[str]:
    """Every cross-reference check over one render."""
    pods = pod_templates(docs)
    return [
        *sensor_dependencies(docs),
        *event_bus_refs(docs),
        *service_account_refs(docs, pods),
        *config_refs(docs, external, pods),
        *role_bindings(docs),
        *workflow_parameters(docs),
        *trigger_parameters(docs),
        *service_selectors(docs, pods),
        *service_monitors(docs, pods),
        *network_policy_selectors(docs, pods),
    ]
