"""Train the cross-modal fusion model over frozen sensor encoders' cached embeddings.

The embeddings come from rooivalk.features.fusion_features (one (N, D_s) matrix per sensor over all
events; rows of events without the sensor stay zero and are masked). `train_fusion` trains
`FusionTransformer` on those matrices with modality dropout; only the fusion layers train, the sensor
encoders are never touched again.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from rooivalk.data.multisensor_dataset import MultiSensorDataset
from rooivalk.events import MetricsFn, ProgressFn
from rooivalk.models.fusion_inference import FusionFeatures, build_fusion, embedding_dims, fusion_arrays
from rooivalk.models.fusion_transformer import FusionTransformer
from rooivalk.plan import FusionSpec
from rooivalk.training.engine.fitting import FitResult, fit_model
from rooivalk.training.tasks import FusionClassification


def fusion_task(
    features: FusionFeatures, dataset: MultiSensorDataset, train_rows: np.ndarray | None = None
) -> FusionClassification:
    """The fusion task over cached embeddings: training and validation events of the dataset's splits."""
    train_rows = dataset.split_mask("train") if train_rows is None else train_rows
    val_rows = dataset.split_mask("val")
    return FusionClassification(
        list(features.features),
        fusion_arrays(features, train_rows),
        dataset.labels[train_rows],
        fusion_arrays(features, val_rows),
        dataset.labels[val_rows],
        dataset.num_classes,
    )


def train_fusion(
    features: FusionFeatures,
    dataset: MultiSensorDataset,
    spec: FusionSpec,
    progress: ProgressFn | None = None,
    checkpoint_uri: str | None = None,
    log_metrics: MetricsFn | None = None,
) -> tuple[FusionTransformer, FitResult]:
    """Train the fusion transformer on the cached embeddings (only fusion layers train), resuming from
    `checkpoint_uri` (or fusion.training.checkpoint.uri) when it holds a checkpoint."""
    torch.manual_seed(spec.training.seed)
    model = build_fusion(embedding_dims(features), dataset.num_classes, spec)
    report = progress or (lambda _event: None)
    fit = fit_model(
        model,
        fusion_task(features, dataset),
        spec.training,
        pretrained=False,
        checkpoint_uri=spec.training.checkpoint.uri or checkpoint_uri,
        plan_digest=hashlib.sha256(spec.model_dump_json().encode()).hexdigest(),
        progress=lambda event: report({**event, "model": "fusion"}),
        log_metrics=log_metrics,
    )
    return model, fit
