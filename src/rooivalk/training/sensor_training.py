"""Train one sensor model of a multi-sensor plan on its own samples, through the one engine.

The sensor's family names its task: image sensors (timm) train as image classification (staged
fine-tuning of a pretrained backbone, cached head stage, augmentation, budgets); RF, radar and
acoustic models as tensor classification on their preprocessed arrays. Either way the model trains
on the events that have its sensor's sample, with the dataset's splits, and checkpoints to
`checkpoint_uri` so that a rerun of the step resumes.
"""

from __future__ import annotations

import hashlib
import time

import torch
from torch import nn

from rooivalk.data.multisensor_dataset import MultiSensorDataset
from rooivalk.events import MetricsFn, ProgressFn
from rooivalk.models import create_model
from rooivalk.models.registry import family_task
from rooivalk.models.sensor_artifacts import SensorTrainResult
from rooivalk.models.sensor_encoding import sensor_encoding, sensor_split
from rooivalk.plan import SensorSpec
from rooivalk.training.engine.fitting import fit_model
from rooivalk.training.tasks import ImageClassification, Task, TensorClassification
from rooivalk.training.teachers import sensor_teacher


def sensor_task(name: str, spec: SensorSpec, model: nn.Module, dataset: MultiSensorDataset) -> Task:
    """The training task of sensor `name`'s model, over the events that have its sample."""
    kind = family_task(spec.model.family)
    if kind == "image":
        view = dataset.image_view(name)
        return ImageClassification.for_model(model, spec.model.input_size, spec.training, view, dataset.num_classes)
    if kind == "tensor":
        encoding = sensor_encoding(model, spec.model)
        train_inputs, train_labels = sensor_split(dataset, name, "train", encoding)
        val_inputs, val_labels = sensor_split(dataset, name, "val", encoding)
        return TensorClassification(
            {"inputs": train_inputs}, train_labels, {"inputs": val_inputs}, val_labels, dataset.num_classes
        )
    raise ValueError(f"sensors.{name}.model.family: {spec.model.family!r} trains as task {kind!r}, not a sensor task")


def train_sensor(
    name: str,
    spec: SensorSpec,
    dataset: MultiSensorDataset,
    progress: ProgressFn | None = None,
    checkpoint_uri: str | None = None,
    log_metrics: MetricsFn | None = None,
) -> SensorTrainResult:
    """Train sensor `name`'s model (from scratch or fine-tuned, by its plan) and return it at its best epoch.
    `checkpoint_uri` (or the sensor's training.checkpoint.uri): where checkpoints go and a rerun resumes."""
    report = progress or (lambda _event: None)
    started = time.perf_counter()
    torch.manual_seed(spec.training.seed)  # model init (a pretrained backbone's new head too): same seed, same model
    model = create_model(spec.model, dataset.num_classes)
    task = sensor_task(name, spec, model, dataset)
    if isinstance(task, ImageClassification) and spec.training.channels_last:
        model = model.to(memory_format=torch.channels_last)
    distillation = spec.training.distillation
    teacher = None
    if distillation is not None:
        preprocessing = sensor_encoding(model, spec.model).preprocessing
        teacher = sensor_teacher(distillation, name, list(dataset.info.classes), preprocessing)
    fit = fit_model(
        model,
        task,
        spec.training,
        pretrained=spec.model.pretrained is not None,
        checkpoint_uri=spec.training.checkpoint.uri or checkpoint_uri,
        plan_digest=hashlib.sha256(spec.model_dump_json().encode()).hexdigest(),
        progress=lambda event: report({**event, "model": name}),
        log_metrics=log_metrics,
        teacher=teacher,
    )
    model = model.to(memory_format=torch.contiguous_format)
    return SensorTrainResult(
        name,
        model,
        sensor_encoding(model, spec.model),
        fit.best_val_accuracy,
        time.perf_counter() - started,
        fit.stages,
        fit.history,
        fit.resumed_from,
    )
