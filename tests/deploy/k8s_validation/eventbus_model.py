"""Pydantic model of Argo Events' EventBus (argoproj.io/v1alpha1).

hera's events models come from the Argo Workflows swagger, which has Sensor and EventSource but not
EventBus, so this transcribes the Go types of argo-events (pkg/apis/events/v1alpha1: eventbus_types.go,
jetstream_eventbus.go, nats_eventbus.go, kafka_eventbus.go, container_template.go,
persistence_strategy.go). Kubernetes and shared Argo Events types are hera's, so they stay in step with
the rest of the validation. `status` is left out: a manifest never sets it.
"""

from __future__ import annotations

from typing import Annotated

from hera.events.models import KafkaConsumerGroup, Metadata, SASLConfig, TLSConfig
from hera.events.models.io.k8s.api.core.v1 import (
    Affinity,
    LocalObjectReference,
    PodSecurityContext,
    ResourceRequirements,
    SecretKeySelector,
    SecurityContext,
    Toleration,
)
from hera.events.models.io.k8s.apimachinery.pkg.apis.meta.v1 import ObjectMeta
from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ContainerTemplate(_Strict):
    resources: ResourceRequirements | None = None
    image_pull_policy: Annotated[str | None, Field(alias="imagePullPolicy")] = None
    security_context: Annotated[SecurityContext | None, Field(alias="securityContext")] = None


class PersistenceStrategy(_Strict):
    storage_class_name: Annotated[str | None, Field(alias="storageClassName")] = None
    access_mode: Annotated[str | None, Field(alias="accessMode")] = None
    volume_size: Annotated[str | None, Field(alias="volumeSize")] = None


class _PodSettings(_Strict):
    """Fields JetStreamBus and NativeStrategy share: the bus StatefulSet's pod."""

    container_template: Annotated[ContainerTemplate | None, Field(alias="containerTemplate")] = None
    metrics_container_template: Annotated[ContainerTemplate | None, Field(alias="metricsContainerTemplate")] = None
    persistence: PersistenceStrategy | None = None
    metadata: Metadata | None = None
    node_selector: Annotated[dict[str, str] | None, Field(alias="nodeSelector")] = None
    tolerations: list[Toleration] | None = None
    security_context: Annotated[PodSecurityContext | None, Field(alias="securityContext")] = None
    image_pull_secrets: Annotated[list[LocalObjectReference] | None, Field(alias="imagePullSecrets")] = None
    priority_class_name: Annotated[str | None, Field(alias="priorityClassName")] = None
    priority: int | None = None
    affinity: Affinity | None = None
    service_account_name: Annotated[str | None, Field(alias="serviceAccountName")] = None
    max_payload: Annotated[str | None, Field(alias="maxPayload")] = None


class JetStreamBus(_PodSettings):
    version: str | None = None
    replicas: int | None = None
    reloader_container_template: Annotated[ContainerTemplate | None, Field(alias="reloaderContainerTemplate")] = None
    settings: str | None = None
    start_args: Annotated[list[str] | None, Field(alias="startArgs")] = None
    stream_config: Annotated[str | None, Field(alias="streamConfig")] = None


class NativeStrategy(_PodSettings):
    replicas: int | None = None
    auth: str | None = None
    max_age: Annotated[str | None, Field(alias="maxAge")] = None
    max_msgs: Annotated[int | None, Field(alias="maxMsgs")] = None
    max_bytes: Annotated[str | None, Field(alias="maxBytes")] = None
    max_subs: Annotated[int | None, Field(alias="maxSubs")] = None
    raft_heartbeat_timeout: Annotated[str | None, Field(alias="raftHeartbeatTimeout")] = None
    raft_election_timeout: Annotated[str | None, Field(alias="raftElectionTimeout")] = None
    raft_lease_timeout: Annotated[str | None, Field(alias="raftLeaseTimeout")] = None
    raft_commit_timeout: Annotated[str | None, Field(alias="raftCommitTimeout")] = None


class NATSConfig(_Strict):
    url: str | None = None
    cluster_id: Annotated[str | None, Field(alias="clusterID")] = None
    auth: str | None = None
    access_secret: Annotated[SecretKeySelector | None, Field(alias="accessSecret")] = None


class NATSBus(_Strict):
    native: NativeStrategy | None = None
    exotic: NATSConfig | None = None


class JetStreamConfig(_Strict):
    url: str | None = None
    access_secret: Annotated[SecretKeySelector | None, Field(alias="accessSecret")] = None
    stream_config: Annotated[str | None, Field(alias="streamConfig")] = None
    tls: TLSConfig | None = None
    auth: str | None = None


class KafkaBus(_Strict):
    url: str | None = None
    topic: str | None = None
    version: str | None = None
    tls: TLSConfig | None = None
    sasl: SASLConfig | None = None
    consumer_group: Annotated[KafkaConsumerGroup | None, Field(alias="consumerGroup")] = None
    partitioner: str | None = None
    consumer_batch_max_wait: Annotated[str | None, Field(alias="consumerBatchMaxWait")] = None


class EventBusSpec(_Strict):
    nats: NATSBus | None = None
    jetstream: JetStreamBus | None = None
    kafka: KafkaBus | None = None
    jetstream_exotic: Annotated[JetStreamConfig | None, Field(alias="jetstreamExotic")] = None


class EventBus(_Strict):
    metadata: ObjectMeta
    spec: EventBusSpec
