"""Which Secrets and ConfigMaps a render references, and which Secrets the user creates beforehand.

Pods are read structurally (env, envFrom, volumes, projected volumes, imagePullSecrets). CRD documents
are walked along their models, so every SecretKeySelector / ConfigMapKeySelector / volume source in an
EventSource (minio `accessKey`), a Sensor or a Workflow's artifact settings is found without a list of
field names to keep in step with Argo.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .pods import WORKLOAD_POD_PATHS, Container, PodTemplate
from .render import Doc
from .schema import CRD_MODELS, label
from .strict_models import Walk, join, walk

BUILTIN_POD_KINDS = frozenset({*WORKLOAD_POD_PATHS, "Pod"})
# ConfigMaps Kubernetes itself creates in every namespace.
AUTO_CONFIGMAPS = frozenset({"kube-root-ca.crt"})
# Model class name -> (referenced kind, field holding the name).
_TYPED_REFS: dict[str, tuple[str, str]] = {
    "SecretKeySelector": ("Secret", "name"),
    "SecretEnvSource": ("Secret", "name"),
    "SecretVolumeSource": ("Secret", "secretName"),
    "SecretProjection": ("Secret", "name"),
    "ConfigMapKeySelector": ("ConfigMap", "name"),
    "ConfigMapEnvSource": ("ConfigMap", "name"),
    "ConfigMapVolumeSource": ("ConfigMap", "name"),
    "ConfigMapProjection": ("ConfigMap", "name"),
}


@dataclass(frozen=True)
class Ref:
    kind: str  # "Secret" or "ConfigMap"
    name: str
    where: str  # "Kind/name: path"


def _pod_refs(pod: PodTemplate) -> Iterator[Ref]:
    for container in pod.containers:
        yield from _container_refs(container, pod.owner)
    for index, volume in enumerate(pod.pod.get("volumes") or []):
        where = f"{pod.owner}: {join(join(pod.path, 'volumes'), index)}"
        yield from _volume_refs(volume or {}, where)
    for index, secret in enumerate(pod.pod.get("imagePullSecrets") or []):
        if isinstance(secret, dict) and secret.get("name"):
            yield Ref("Secret", str(secret["name"]), f"{pod.owner}: {pod.path}.imagePullSecrets[{index}]")


def _container_refs(container: Container, owner: str) -> Iterator[Ref]:
    sources = [
        (join(join(container.path, "env"), i), (env or {}).get("valueFrom") or {}, ("secretKeyRef", "configMapKeyRef"))
        for i, env in enumerate(container.spec.get("env") or [])
    ]
    sources += [
        (join(join(container.path, "envFrom"), i), env_from or {}, ("secretRef", "configMapRef"))
        for i, env_from in enumerate(container.spec.get("envFrom") or [])
    ]
    for path, source, keys in sources:
        for key, kind in zip(keys, ("Secret", "ConfigMap"), strict=True):
            ref = source.get(key)
            if isinstance(ref, dict) and ref.get("name") and not ref.get("optional"):
                yield Ref(kind, str(ref["name"]), f"{owner}: {path}")


def _volume_refs(volume: dict[str, Any], where: str) -> Iterator[Ref]:
    secret, config_map = volume.get("secret") or {}, volume.get("configMap") or {}
    if secret.get("secretName") and not secret.get("optional"):
        yield Ref("Secret", str(secret["secretName"]), where)
    if config_map.get("name") and not config_map.get("optional"):
        yield Ref("ConfigMap", str(config_map["name"]), where)
    for source in (volume.get("projected") or {}).get("sources") or []:
        for key, kind in (("secret", "Secret"), ("configMap", "ConfigMap")):
            ref = (source or {}).get(key)
            if isinstance(ref, dict) and ref.get("name") and not ref.get("optional"):
                yield Ref(kind, str(ref["name"]), where)


def _crd_refs(doc: Doc, owner: str, prefix: str = "") -> list[Ref]:
    loader = CRD_MODELS.get((str(doc.get("apiVersion")), str(doc.get("kind"))))
    if loader is None:
        return []
    found: list[Ref] = []

    def visit(model: type, value: dict[str, Any], path: str) -> None:
        typed = _TYPED_REFS.get(model.__name__)
        if typed and value.get(typed[1]) and not value.get("optional"):
            found.append(Ref(typed[0], str(value[typed[1]]), f"{owner}: {path}"))

    def embedded(obj: dict[str, Any], path: str) -> None:
        found.extend(_crd_refs(obj, owner, path))

    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}
    walk(body, loader(), prefix, Walk(visit=visit, embedded=embedded))
    return found


def references(docs: tuple[Doc, ...] | list[Doc], pods: list[PodTemplate]) -> list[Ref]:
    """Every Secret/ConfigMap reference of a render (duplicates removed, first place kept)."""
    seen: dict[tuple[str, str, str], Ref] = {}
    # CRD documents (Argo pods included) are covered by the model walk below; reading their pods
    # structurally as well would report each reference twice.
    refs = [ref for pod in pods if pod.kind in BUILTIN_POD_KINDS for ref in _pod_refs(pod)]
    for doc in docs:
        refs += _crd_refs(doc, label(doc))
    for ref in refs:
        seen.setdefault((ref.kind, ref.name, ref.where), ref)
    return list(seen.values())


# Chart values keys that name an object the user creates with kubectl before installing.
EXTERNAL_KEYS = {"existingSecret": "Secret", "existingConfigMap": "ConfigMap"}


def external_objects(values: dict[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of every object the user creates: each non-empty `existingSecret`/`existingConfigMap`.

    The chart's values are the one place these names live (`s3.existingSecret: rooivalk-s3`,
    `mlflow.backendStore.existingSecret: rooivalk-mlflow-db`, `plan.existingConfigMap: rooivalk-plan`);
    the docs tell the user to create them.
    """
    names: set[tuple[str, str]] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in EXTERNAL_KEYS and isinstance(value, str) and value:
                    names.add((EXTERNAL_KEYS[key], value))
                else:
                    collect(value)
        elif isinstance(node, list):
            for item in node:
                collect(item)

    collect(values)
    return names
