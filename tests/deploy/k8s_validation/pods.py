"""Every pod a render would make run, found wherever its template lives.

Built-in workloads carry a PodSpec; Argo Workflows (also inside CronWorkflows, WorkflowTemplates and a
Sensor's trigger) make one pod per container/script/containerSet template; Argo Events makes a pod from
a Sensor's or an EventSource's `spec.template` and a StatefulSet from an EventBus. Each is flattened into
a PodTemplate: pod-level settings, containers (with their YAML paths), the labels the pod will carry
(including those the Argo controllers add, so selectors can be checked) and its ServiceAccount.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .render import Doc
from .schema import label
from .strict_models import join


# The value of a label that the controller sets at run time (a generated Workflow name): such a label
# exists, but only `Exists` / `DoesNotExist` selector terms can be decided against it.
class _Unknown:
    def __repr__(self) -> str:
        return "<set at run time>"


UNKNOWN = _Unknown()

WORKLOAD_POD_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
WORKFLOW_KINDS = ("Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow")
# Argo Workflow templates that run a pod, and the container keys they use.
POD_TEMPLATE_KEYS = ("container", "script", "containerSet")


@dataclass(frozen=True)
class Container:
    name: str
    path: str  # YAML path of the container spec in its document
    spec: dict[str, Any]
    # False where the controller chooses the image (Argo Events pods): there is no image to pin.
    has_image: bool = True


@dataclass
class PodTemplate:
    owner: str  # Kind/name of the document (and the trigger or template inside it)
    kind: str  # the document's kind
    path: str  # YAML path of the pod-level settings
    pod: dict[str, Any]  # pod-level settings (securityContext, serviceAccountName, volumes, ...)
    containers: list[Container]
    labels: dict[str, Any] = field(default_factory=dict)
    namespace: str | None = None
    # True for pods that run for as long as the release does (they must not share a ServiceAccount).
    long_running: bool = True
    # Where serviceAccountName is set, when not at `path` (an Argo template inherits the Workflow's).
    account_path: str = ""

    @property
    def account_field(self) -> str:
        return self.account_path or f"{self.path}.serviceAccountName"

    @property
    def service_account(self) -> str | None:
        name = self.pod.get("serviceAccountName") or self.pod.get("serviceAccount")
        return str(name) if name else None


def _get(doc: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _containers(pod: dict[str, Any], path: str, keys: tuple[str, ...]) -> list[Container]:
    out = []
    for key in keys:
        for index, spec in enumerate(pod.get(key) or []):
            if isinstance(spec, dict):
                out.append(Container(str(spec.get("name", f"{key}[{index}]")), join(join(path, key), index), spec))
    return out


def _builtin_pods(doc: Doc) -> Iterator[PodTemplate]:
    kind = doc["kind"]
    meta = doc.get("metadata") or {}
    keys: tuple[str, ...] = ()
    if kind == "Pod":
        template = doc
    elif kind in WORKLOAD_POD_PATHS:
        keys = WORKLOAD_POD_PATHS[kind]
        template = _get(doc, keys)
    else:
        return
    if not isinstance(template, dict):
        return
    spec = template.get("spec") or {}
    path = ".".join((*keys, "spec"))
    containers = _containers(spec, path, ("initContainers", "containers", "ephemeralContainers"))
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    yield PodTemplate(
        label(doc), kind, path, spec, containers, labels, meta.get("namespace"), kind not in ("Job", "CronJob")
    )


def workflow_pods(
    owner: str, kind: str, wf_spec: dict[str, Any], path: str, base_labels: dict[str, Any]
) -> list[PodTemplate]:
    """One PodTemplate per pod-running template of a Workflow spec (at `path`)."""
    pods = []
    pod_labels = {**base_labels, **((wf_spec.get("podMetadata") or {}).get("labels") or {})}
    for index, template in enumerate(wf_spec.get("templates") or []):
        if not isinstance(template, dict) or not any(k in template for k in POD_TEMPLATE_KEYS):
            continue
        tpath = join(join(path, "templates"), index)
        # Template-level settings replace the workflow's (Argo: template securityContext, SA, volumes add).
        pod = {
            k: v
            for k, v in wf_spec.items()
            if k in ("securityContext", "serviceAccountName", "volumes", "podSpecPatch")
        }
        pod |= {k: v for k, v in template.items() if k in ("securityContext", "serviceAccountName", "podSpecPatch")}
        containers = []
        for key in ("container", "script"):
            if isinstance(template.get(key), dict):
                containers.append(Container(str(template[key].get("name", "main")), join(tpath, key), template[key]))
        if isinstance(template.get("containerSet"), dict):
            containers += _containers(template["containerSet"], join(tpath, "containerSet"), ("containers",))
        containers += _containers(template, tpath, ("initContainers", "sidecars"))
        labels = {**pod_labels, **((template.get("metadata") or {}).get("labels") or {})}
        name = template.get("name", index)
        account_path = f"{tpath if 'serviceAccountName' in template else path}.serviceAccountName"
        pods.append(
            PodTemplate(f"{owner} template {name}", kind, tpath, pod, containers, labels, None, False, account_path)
        )
    return pods


def _workflow_doc_pods(doc: Doc) -> list[PodTemplate]:
    kind, meta = doc["kind"], doc.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName") or ""
    labels: dict[str, Any] = {"workflows.argoproj.io/workflow": UNKNOWN}
    if kind == "CronWorkflow":
        spec, path = _get(doc, ("spec", "workflowSpec")), "spec.workflowSpec"
        labels["workflows.argoproj.io/cron-workflow"] = name
        labels |= _get(doc, ("spec", "workflowMetadata", "labels")) or {}
    else:
        spec, path = doc.get("spec"), "spec"
        labels |= meta.get("labels") or {}
    if not isinstance(spec, dict):
        return []
    pods = workflow_pods(label(doc), kind, spec, path, labels)
    for pod in pods:
        pod.namespace = meta.get("namespace")
    return pods


def _argo_events_pod(doc: Doc, controller: str, name_label: str) -> PodTemplate:
    meta = doc.get("metadata") or {}
    name = meta.get("name", "")
    template = _get(doc, ("spec", "template")) or {}
    labels = {"controller": controller, name_label: name, "owner-name": name}
    labels |= (template.get("metadata") or {}).get("labels") or {}
    # The controller builds the container and its image; the template may only add settings to it.
    container = Container("main", "spec.template.container", template.get("container") or {}, has_image=False)
    return PodTemplate(label(doc), doc["kind"], "spec.template", template, [container], labels, meta.get("namespace"))


def _eventbus_pod(doc: Doc) -> PodTemplate | None:
    meta = doc.get("metadata") or {}
    name = meta.get("name", "")
    for path in ("spec.jetstream", "spec.nats.native"):
        bus = _get(doc, tuple(path.split(".")))
        if isinstance(bus, dict):
            break
    else:
        return None  # an exotic or Kafka bus runs no pod of ours
    keys = ["containerTemplate", "metricsContainerTemplate"]
    if path == "spec.jetstream":
        keys.insert(1, "reloaderContainerTemplate")
    containers = [Container(k, join(path, k), bus.get(k) or {}, has_image=False) for k in keys]
    labels = {"controller": "eventbus-controller", "eventbus-name": name, "owner-name": name}
    labels |= (bus.get("metadata") or {}).get("labels") or {}
    return PodTemplate(label(doc), "EventBus", path, bus, containers, labels, meta.get("namespace"))


def sensor_workflows(doc: Doc) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, Workflow object) of each argoWorkflow/k8s trigger of a Sensor that embeds one."""
    for index, trigger in enumerate(_get(doc, ("spec", "triggers")) or []):
        template = (trigger or {}).get("template") or {}
        for key in ("argoWorkflow", "k8s"):
            resource = _get(template, (key, "source", "resource"))
            if isinstance(resource, dict) and resource.get("kind") == "Workflow":
                yield f"spec.triggers[{index}].template.{key}.source.resource", resource


def pod_templates(docs: list[Doc] | tuple[Doc, ...]) -> list[PodTemplate]:
    """All pods of a render, in document order."""
    pods: list[PodTemplate] = []
    for doc in docs:
        kind = doc.get("kind")
        if kind in WORKFLOW_KINDS and str(doc.get("apiVersion", "")).startswith("argoproj.io/"):
            pods += _workflow_doc_pods(doc)
        elif kind == "Sensor":
            pods.append(_argo_events_pod(doc, "sensor-controller", "sensor-name"))
            for path, workflow in sensor_workflows(doc):
                wf_labels = {"workflows.argoproj.io/workflow": UNKNOWN}
                wf_labels |= (workflow.get("metadata") or {}).get("labels") or {}
                owner = f"{label(doc)} {path} (Workflow)"
                for pod in workflow_pods(owner, "Workflow", workflow.get("spec") or {}, f"{path}.spec", wf_labels):
                    pod.namespace = (doc.get("metadata") or {}).get("namespace")
                    pods.append(pod)
        elif kind == "EventSource":
            pods.append(_argo_events_pod(doc, "eventsource-controller", "eventsource-name"))
        elif kind == "EventBus":
            bus = _eventbus_pod(doc)
            if bus is not None:
                pods.append(bus)
        elif isinstance(kind, str):
            pods += _builtin_pods(doc)
    return pods
