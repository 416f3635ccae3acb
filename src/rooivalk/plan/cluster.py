"""The `cluster` and `retraining` sections of a plan: how the compiled pipeline's pods run on Kubernetes
(resources, GPUs, scheduling, secrets, volumes, retries) and how the retraining pipeline starts.

Local runs (`rooivalk run`) ignore `cluster`; `rooivalk compile` and `rooivalk submit` write it into the
pipeline's Kubernetes platform spec through kfp-kubernetes (pipelines/kubernetes.py).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from rooivalk.plan.base import Strict

# Pipeline steps grouped by what they need from a node; every component belongs to one kind.
StepKind = Literal["tracking", "ingest", "train", "features", "evaluate", "export", "register", "monitor"]
STEP_KINDS: tuple[str, ...] = StepKind.__args__  # type: ignore[attr-defined]

# Kinds whose steps can run again safely after a pod dies: content-addressed outputs (ingest, features),
# checkpoint resume (train), pure functions of their inputs (evaluate, export, monitor). Registration
# and the tracking run bookkeeping move MLflow aliases and run states: a blind retry could register
# twice, so they are not retried.
RETRYABLE_KINDS = frozenset({"ingest", "train", "features", "evaluate", "export", "monitor"})

# Kubernetes quantities: "500m", "2", "4Gi", "512Mi", "1.5".
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")


class TolerationSpec(Strict):
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class StepResources(Strict):
    """Pod settings of one step kind; unset fields fall back to `cluster.defaults`."""

    cpu_request: str | None = Field(None, description="e.g. 500m, 2")
    cpu_limit: str | None = None
    memory_request: str | None = Field(None, description="e.g. 2Gi")
    memory_limit: str | None = None
    gpus: int | None = Field(None, ge=0, description="GPUs per pod (the accelerator limit); 0: none.")
    accelerator: str | None = Field(
        None, description="The GPU resource name, e.g. nvidia.com/gpu (KFP's accelerator type)."
    )
    node_selector: dict[str, str] | None = Field(
        None, description="e.g. {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3} for a GPU model."
    )
    tolerations: list[TolerationSpec] | None = None
    shm_size: str | None = Field(
        None, description="A memory-backed /dev/shm of this size (DataLoader workers share batches through it)."
    )
    retries: int | None = Field(None, ge=0, le=10, description="Retries after a failed pod (retryable kinds only).")
    timeout_s: int | None = Field(None, gt=0, description="The step's pod is stopped after this many seconds.")

    @field_validator("cpu_request", "cpu_limit", "memory_request", "memory_limit", "shm_size")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        if value is not None and not _QUANTITY.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 4Gi)")
        return value

    def merged_over(self, base: StepResources) -> StepResources:
        """These settings, with every unset field taken from `base`."""
        own = self.model_dump(exclude_none=True)
        return StepResources.model_validate({**base.model_dump(exclude_none=True), **own})


class SecretEnvSpec(Strict):
    """A Kubernetes Secret whose keys become environment variables of every step."""

    name: str = Field(description="The Secret's name (created with kubectl; never in the plan).")
    env: dict[str, str] = Field(description="Environment variable -> key in the Secret.", min_length=1)
    optional: bool = False


class VolumeSpec(Strict):
    """An existing PersistentVolumeClaim mounted into some step kinds (e.g. a shared feature cache)."""

    claim: str = Field(description="The PVC's name (ReadWriteMany when steps run on several nodes).")
    mount_path: str = Field(pattern=r"^/")
    kinds: list[StepKind] = Field(
        default_factory=lambda: list[StepKind](["features", "train", "evaluate"]),
        description="Step kinds that mount it.",
    )


class ClusterSpec(Strict):
    defaults: StepResources = StepResources(
        cpu_request="1", cpu_limit="2", memory_request="2Gi", memory_limit="4Gi", retries=2
    )
    steps: dict[StepKind, StepResources] = Field(
        default_factory=dict, description="Per step kind, merged over `defaults` field by field."
    )
    secrets: list[SecretEnvSpec] = Field(
        default_factory=list, description="Secrets exposed as env to every step (S3 and MLflow credentials)."
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Plain env for every step (e.g. MLFLOW_S3_ENDPOINT_URL, AWS_DEFAULT_REGION); never credentials.",
    )
    feature_cache_volume: VolumeSpec | None = Field(
        None, description="A PVC for the feature cache; null: the cache lives at its URI (S3 on clusters)."
    )
    image_registry: str | None = Field(
        None,
        description="Pull the rooivalk images from this registry instead (a mirror for air-gapped clusters).",
    )
    image_pull_secrets: list[str] = Field(default_factory=list)
    run_as_user: int = Field(10001, ge=1, description="The images' non-root user; pods run as it.")

    @field_validator("env")
    @classmethod
    def _no_credentials_in_env(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if any(word in name.upper() for word in ("SECRET", "PASSWORD", "TOKEN", "ACCESS_KEY")):
                raise ValueError(f"{name}: credentials come from `cluster.secrets` (a Kubernetes Secret), not env")
        return env

    @model_validator(mode="after")
    def _retries_only_where_safe(self) -> ClusterSpec:
        for kind, resources in self.steps.items():
            if resources.retries and kind not in RETRYABLE_KINDS:
                raise ValueError(
                    f"steps.{kind}.retries: {kind} steps are not retried (a retry could register or close "
                    f"a run twice); retryable kinds: {', '.join(sorted(RETRYABLE_KINDS))}"
                )
        return self

    def resources_for(self, kind: str) -> StepResources:
        """The effective settings of a step kind; retries are dropped for kinds that must not retry."""
        own = self.steps.get(kind)  # type: ignore[call-overload]  # kind: a StepKind, checked by callers
        merged = own.merged_over(self.defaults) if own is not None else self.defaults
        if kind not in RETRYABLE_KINDS:
            merged = merged.model_copy(update={"retries": 0})
        return merged


class RetrainingSpec(Strict):
    warm_start: bool = Field(
        False,
        description="Start the challenger from the registry champion's weights (single-model timm plans) "
        "instead of the plan's pretrained weights.",
    )
