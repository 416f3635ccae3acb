"""A plan's `cluster` section applied to pipeline tasks through kfp-kubernetes: resources and GPUs,
node selectors and tolerations, a memory-backed /dev/shm, Secrets as env, a PVC for the feature cache,
pod security, retries and the image registry.

Every pipeline calls `configure_tasks(plan_cluster, tasks)` on the tasks it builds; the step kind of a
task comes from its component's name, so a new component without a kind fails at compile time instead
of running with no resources set.
"""

from __future__ import annotations

from collections.abc import Iterable

from kfp import dsl, kubernetes

from rooivalk.plan import ClusterSpec, StepResources
from rooivalk_kfp.components.images import with_registry

# Component name (as KFP spells it) -> step kind of the plan's `cluster.steps`.
STEP_KIND_OF_COMPONENT = {
    "open-run": "tracking",
    "close-run": "tracking",
    "ingest-data": "ingest",
    "ingest-events": "ingest",
    "prepare-retraining": "tracking",
    "train-model": "train",
    "train-sensor": "train",
    "train-fusion": "train",
    "cache-features": "features",
    "evaluate-model": "evaluate",
    "evaluate-system": "evaluate",
    "export-model": "export",
    "export-system": "export",
    "register-model": "register",
    "register-system": "register",
    "train-attribution": "train",
    "register-attribution": "register",
    "monitor-drift": "monitor",
    "search-worker": "train",  # trial pods train: cluster.steps.train (GPUs, retries) applies to them
    "search-report": "evaluate",  # a pure function of the study
}
DEFAULT_ACCELERATOR = "nvidia.com/gpu"
# Retries wait 30 s, then 60 s, ... up to 10 min: long enough for a node or S3 hiccup to pass.
RETRY_BACKOFF = {"backoff_duration": "30s", "backoff_factor": 2.0, "backoff_max_duration": "600s"}


def step_kind(task: dsl.PipelineTask) -> str:
    name = task.component_spec.name
    try:
        return STEP_KIND_OF_COMPONENT[name]
    except KeyError:
        raise ValueError(
            f"component {name!r} has no step kind in pipelines/kubernetes.py STEP_KIND_OF_COMPONENT"
        ) from None


def configure_tasks(cluster: ClusterSpec | None, tasks: Iterable[dsl.PipelineTask]) -> None:
    """Apply the plan's cluster settings to each task (nothing without a `cluster` section)."""
    if cluster is None:
        return
    for task in tasks:
        configure_task(cluster, task)


def configure_task(cluster: ClusterSpec, task: dsl.PipelineTask) -> None:
    kind = step_kind(task)
    resources = cluster.resources_for(kind)
    _set_resources(task, resources)
    _set_scheduling(task, resources)
    if resources.shm_size:
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                   size_limit=resources.shm_size)  # fmt: skip
    if resources.retries:
        task.set_retry(num_retries=resources.retries, **RETRY_BACKOFF)  # type: ignore[arg-type]
    if resources.timeout_s:
        kubernetes.set_timeout(task, resources.timeout_s)
    for secret in cluster.secrets:
        for env_name, key in secret.env.items():  # one call per variable: two may read the same key
            kubernetes.use_secret_as_env(task, secret.name, secret_key_to_env={key: env_name}, optional=secret.optional)
    for name, value in sorted(cluster.env.items()):
        task.set_env_variable(name, value)
    volume = cluster.feature_cache_volume
    if volume is not None and kind in volume.kinds:
        kubernetes.mount_pvc(task, pvc_name=volume.claim, mount_path=volume.mount_path)
    if cluster.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, cluster.image_pull_secrets)
    kubernetes.set_security_context(
        task, run_as_user=cluster.run_as_user, run_as_group=cluster.run_as_user, run_as_non_root=True
    )
    if cluster.image_registry:
        image = task.component_spec.implementation.container.image  # type: ignore[union-attr]
        task.set_container_image(with_registry(image, cluster.image_registry))


def _set_resources(task: dsl.PipelineTask, resources: StepResources) -> None:
    if resources.cpu_request:
        task.set_cpu_request(resources.cpu_request)
    if resources.cpu_limit:
        task.set_cpu_limit(resources.cpu_limit)
    if resources.memory_request:
        task.set_memory_request(resources.memory_request)
    if resources.memory_limit:
        task.set_memory_limit(resources.memory_limit)
    if resources.gpus:
        task.set_accelerator_type(resources.accelerator or DEFAULT_ACCELERATOR)
        task.set_accelerator_limit(resources.gpus)


def _set_scheduling(task: dsl.PipelineTask, resources: StepResources) -> None:
    for key, value in sorted((resources.node_selector or {}).items()):
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for toleration in resources.tolerations or []:
        kubernetes.add_toleration(
            task,
            key=toleration.key,
            operator=toleration.operator,
            value=toleration.value,
            effect=toleration.effect,
        )
