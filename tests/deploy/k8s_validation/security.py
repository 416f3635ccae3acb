"""The security rules of issue 7, one function each, over every pod and RBAC object of a render.

Each rule returns violations naming Kind/name (and the template inside it), the container and the field.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from .pods import PodTemplate, pod_templates
from .render import Doc
from .schema import label
from .selectors import matches

Docs = tuple[Doc, ...] | list[Doc]
# Env var names that hold credentials; their value must come from a Secret (valueFrom), never `value:`.
CREDENTIAL_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|API_KEY|PRIVATE_KEY|CREDENTIAL", re.I)
# ...unless the name says it holds where a credential is, not the credential (KF_PIPELINES_SA_TOKEN_PATH).
LOCATION_SUFFIX = re.compile(r"_(PATH|FILE|DIR|AUDIENCE)$", re.I)
# user:password@ in a URL (a database URI with its password, say).
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I)
# The one annotation that lets a ClusterRole/ClusterRoleBinding through: it must say why namespace scope is
# not enough. Rooivalk's chart needs none today.
CLUSTER_SCOPE_JUSTIFICATION = "rooivalk.io/cluster-scope-justification"
# What the Sensor may do, all of it: create Workflows (its argoWorkflow trigger), nothing else.
SENSOR_RULE = {"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["create"]}


def _context(pod: PodTemplate, container_sc: dict[str, Any], key: str) -> Any:
    """A container's effective setting: its own securityContext, else the pod's."""
    if key in container_sc:
        return container_sc[key]
    return (pod.pod.get("securityContext") or {}).get(key)


def pod_security(pods: list[PodTemplate]) -> list[str]:
    """runAsNonRoot true and seccompProfile RuntimeDefault (pod level, or on every container); no host namespaces."""
    errors = []
    for pod in pods:
        for container in pod.containers:
            sc = container.spec.get("securityContext") or {}
            where = f"{pod.owner}: container {container.name}"
            if _context(pod, sc, "runAsNonRoot") is not True:
                errors.append(f"{where}: {pod.path}.securityContext.runAsNonRoot must be true")
            seccomp = _context(pod, sc, "seccompProfile") or {}
            if seccomp.get("type") != "RuntimeDefault":
                errors.append(f"{where}: {pod.path}.securityContext.seccompProfile.type must be RuntimeDefault")
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.pod.get(key):
                errors.append(f"{pod.owner}: {pod.path}.{key} must not be true")
        if pod.pod.get("podSpecPatch"):
            errors.append(f"{pod.owner}: {pod.path}.podSpecPatch bypasses these checks; set the fields directly")
    return errors


def container_security(pods: list[PodTemplate]) -> list[str]:
    """readOnlyRootFilesystem true, allowPrivilegeEscalation false, capabilities drop ALL, not privileged."""
    errors = []
    for pod in pods:
        for container in pod.containers:
            sc = container.spec.get("securityContext") or {}
            where = f"{pod.owner}: container {container.name}: {container.path}.securityContext"
            if sc.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{where}.readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{where}.allowPrivilegeEscalation must be false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                errors.append(f"{where}.capabilities.drop must contain ALL")
            if sc.get("privileged"):
                errors.append(f"{where}.privileged must not be true")
    return errors


def resources(pods: list[PodTemplate]) -> list[str]:
    """Every container requests and limits cpu and memory."""
    errors = []
    for pod in pods:
        for container in pod.containers:
            res = container.spec.get("resources") or {}
            for section in ("requests", "limits"):
                for name in ("cpu", "memory"):
                    if (res.get(section) or {}).get(name) in (None, ""):
                        errors.append(
                            f"{pod.owner}: container {container.name}: {container.path}.resources.{section}.{name} "
                            "is not set"
                        )
    return errors


def image_problem(image: Any) -> str | None:
    """Why an image reference is not pinned, or None: it needs a tag other than latest, or a digest."""
    if not isinstance(image, str) or not image:
        return "has no image"
    if "{{" in image:
        return f"image {image!r} is chosen at run time"
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image!r} has no tag (that means :latest)"
    if last.rsplit(":", 1)[1] in ("", "latest"):
        return f"image {image!r} uses :latest"
    return None


def images_pinned(docs: Docs, pods: list[PodTemplate]) -> list[str]:
    """Each container image has an explicit tag that is not latest (or a digest); EventBus versions pinned."""
    errors = []
    for pod in pods:
        for container in pod.containers:
            problem = image_problem(container.spec.get("image")) if container.has_image else None
            if problem:
                errors.append(f"{pod.owner}: container {container.name}: {container.path}.image: {problem}")
    for bus in (d for d in docs if d.get("kind") == "EventBus"):
        jetstream = (bus.get("spec") or {}).get("jetstream")
        if isinstance(jetstream, dict) and jetstream.get("version") in (None, "", "latest"):
            errors.append(f"{label(bus)}: spec.jetstream.version must name a NATS version (not latest)")
    return errors


def plaintext_secrets(docs: Docs, pods: list[PodTemplate]) -> list[str]:
    """No Secret with data in the render, no credential in an env `value:`, no password inside a URL."""
    errors = []
    for doc in docs:
        if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
            errors.append(f"{label(doc)}: a Secret with data/stringData puts a credential in the manifests")
        errors += [f"{label(doc)}: {path}: a URL with user:password@" for path in _url_credentials(doc, "")]
    for pod in pods:
        for container in pod.containers:
            for index, env in enumerate(container.spec.get("env") or []):
                name = str((env or {}).get("name", ""))
                if env.get("value") and CREDENTIAL_NAME.search(name) and not LOCATION_SUFFIX.search(name):
                    errors.append(
                        f"{pod.owner}: container {container.name}: {container.path}.env[{index}] {name} has a "
                        "literal value; take it from a Secret (valueFrom.secretKeyRef)"
                    )
    return errors


def _url_credentials(node: Any, path: str) -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _url_credentials(v, f"{path}.{k}" if path else str(k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _url_credentials(v, f"{path}[{i}]")]
    return [path] if isinstance(node, str) and URL_CREDENTIALS.search(node) else []


def values_secrets(values: dict[str, Any], source: str) -> list[str]:
    """Chart values hold no credential: keys named like one carry no literal string, no URL has a password."""
    errors = []

    def scan(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                child = f"{path}.{key}" if path else str(key)
                flat = re.sub(r"[_-]", "", str(key)).lower()
                credential = re.search(r"(password|passwd|secretkey|accesskey|accesskeyid|token|apikey)$", flat)
                if credential and isinstance(value, str) and value:
                    errors.append(f"{source}: {child}: a credential in plain text; reference an existing Secret")
                scan(value, child)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                scan(item, f"{path}[{index}]")
        elif isinstance(node, str) and URL_CREDENTIALS.search(node):
            errors.append(f"{source}: {path}: a URL with user:password@")

    scan(values, "")
    return errors


# --- RBAC, ServiceAccounts, NetworkPolicies -------------------------------------------------------------


def _name(doc: Doc) -> str | None:
    return (doc.get("metadata") or {}).get("name")


def _bound_roles(docs: Docs, account: str) -> list[tuple[Doc, Doc | None]]:
    """(binding, role or None if not rendered) for every binding with the ServiceAccount as a subject."""
    found = []
    for binding in (d for d in docs if d.get("kind") in ("RoleBinding", "ClusterRoleBinding")):
        subjects = binding.get("subjects") or []
        if any(s.get("kind") == "ServiceAccount" and s.get("name") == account for s in subjects):
            ref = binding.get("roleRef") or {}
            role = next(
                (d for d in docs if d.get("kind") == ref.get("kind") and _name(d) == ref.get("name")),
                None,
            )
            found.append((binding, role))
    return found


def sensor_rbac(docs: Docs) -> list[str]:
    """The Sensor's ServiceAccount is bound to Roles that grant exactly `create` on argoproj.io workflows."""
    errors = []
    for sensor in (d for d in docs if d.get("kind") == "Sensor"):
        account = ((sensor.get("spec") or {}).get("template") or {}).get("serviceAccountName")
        if not account:
            errors.append(f"{label(sensor)}: spec.template.serviceAccountName is not set")
            continue
        bound = _bound_roles(docs, account)
        if not bound:
            errors.append(f"{label(sensor)}: ServiceAccount {account} has no RoleBinding (it must create Workflows)")
        for binding, role in bound:
            if role is None:
                continue  # crossref.role_bindings reports the dangling roleRef
            for index, rule in enumerate(role.get("rules") or []):
                granted = {k: sorted(rule.get(k) or []) for k in SENSOR_RULE}
                if granted != SENSOR_RULE or rule.get("nonResourceURLs"):
                    errors.append(
                        f"{label(role)}: rules[{index}] {granted} (bound to the Sensor's ServiceAccount {account} "
                        f"by {label(binding)}) grants more than create on argoproj.io workflows"
                    )
    return errors


def least_privilege(docs: Docs) -> list[str]:
    """No wildcard in any Role; no Secret reads (pods get Secrets through env/volumes); cluster scope justified."""
    errors = []
    for role in (d for d in docs if d.get("kind") in ("Role", "ClusterRole")):
        for index, rule in enumerate(role.get("rules") or []):
            for key in ("apiGroups", "resources", "verbs"):
                if "*" in (rule.get(key) or []):
                    errors.append(f"{label(role)}: rules[{index}].{key} has a wildcard")
            if "secrets" in (rule.get("resources") or []):
                errors.append(f"{label(role)}: rules[{index}] grants access to secrets")
    for doc in docs:
        if doc.get("kind") in ("ClusterRole", "ClusterRoleBinding"):
            annotations = (doc.get("metadata") or {}).get("annotations") or {}
            if not str(annotations.get(CLUSTER_SCOPE_JUSTIFICATION, "")).strip():
                errors.append(
                    f"{label(doc)}: cluster-scoped RBAC needs a justification "
                    f"(annotation {CLUSTER_SCOPE_JUSTIFICATION}) or a namespaced Role"
                )
    return errors


def own_service_accounts(pods: list[PodTemplate]) -> list[str]:
    """Every pod names a ServiceAccount other than `default`; a workload's account is its own.

    Long-running workloads (Deployments, StatefulSets, DaemonSets, the Argo Events pods) never share one,
    with each other or with Workflow pods; Workflow pods of the pipeline-submitting Workflows may share one.
    """
    errors = []
    users: dict[str, set[str]] = defaultdict(set)
    for pod in pods:
        account = pod.service_account
        if account in (None, "default"):
            errors.append(f"{pod.owner}: {pod.account_field} is {account or 'unset'} (the default account)")
            continue
        assert account is not None
        # All templates of one Workflow are one workload: key them by the Workflow, not the template.
        users[account].add(pod.owner.rsplit(" template ", 1)[0])
    long_running = {p.owner.rsplit(" template ", 1)[0] for p in pods if p.long_running}
    for account, owners in sorted(users.items()):
        if len(owners) > 1 and owners & long_running:
            errors.append(f"ServiceAccount {account} is shared by {', '.join(sorted(owners))}")
    return errors


def network_policy_coverage(docs: Docs, pods: list[PodTemplate]) -> list[str]:
    """Every pod is selected by some NetworkPolicy's podSelector."""
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    errors = []
    for pod in pods:
        if not any(matches((p.get("spec") or {}).get("podSelector") or {}, pod.labels) for p in policies):
            errors.append(f"{pod.owner}: no NetworkPolicy selects its pod (labels {pod.labels})")
    return errors


def all_rules(docs: Docs) -> list[str]:
    """Every security rule over one render."""
    pods = pod_templates(docs)
    return [
        *pod_security(pods),
        *container_security(pods),
        *resources(pods),
        *images_pinned(docs, pods),
        *plaintext_secrets(docs, pods),
        *sensor_rbac(docs),
        *least_privilege(docs),
        *own_service_accounts(pods),
        *network_policy_coverage(docs, pods),
    ]
