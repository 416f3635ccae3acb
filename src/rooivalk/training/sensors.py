"""Train one sensor model of a multi-sensor plan on its own samples.

Image sensors go through the image trainer (progressive unfreezing of a pretrained timm backbone,
cached head stage, budgets); RF, radar and acoustic models through `fit_tensor_model`. Either way
the model trains on the events that have its sensor's sample, with the dataset's splits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from rooivalk.data.dataset import SPLIT_CODES
from rooivalk.data.multisensor import MultiSensorDataset
from rooivalk.features.sensors import SensorEncoding, sensor_encoding
from rooivalk.models import create_model
from rooivalk.plan import DataSpec, Plan, SensorSpec
from rooivalk.training.tensor_fit import Progress, fit_tensor_model, predict_logits, single_input


@dataclass
class SensorTrainResult:
    name: str
    model: nn.Module
    encoding: SensorEncoding
    val_accuracy: float
    seconds: float
    stages: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)


def _train_image_sensor(
    name: str, spec: SensorSpec, dataset: MultiSensorDataset, progress: Progress
) -> tuple[nn.Module, float, list[dict[str, Any]]]:
    from rooivalk.training.trainer import build_trainer, noop, training_device

    # The image trainer reads a single-model plan; this one carries the sensor's model and training.
    plan = Plan(
        name=f"sensor-{name}".replace("_", "-"),
        data=DataSpec(source=dataset.info.source, format="multisensor"),
        model=spec.model,
        training=spec.training,
    )
    device = training_device(spec.training.precision)
    trainer = build_trainer(plan, dataset.image_view(name), device, lambda e: progress({**e, "model": name}), noop)
    trainer.enter_stage(0)
    trainer.fit()
    model = trainer.model
    model.load_state_dict(trainer.best_state or model.state_dict())
    model = model.cpu().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    best = max((s["best_val_accuracy"] for s in trainer.position.stage_summaries), default=float("nan"))
    return model, float(best), trainer.position.stage_summaries


def sensor_split(
    dataset: MultiSensorDataset, name: str, split: str, encoding: SensorEncoding
) -> tuple[np.ndarray, np.ndarray]:
    """(model inputs, labels) of the split's events that have this sensor's sample."""
    rows = dataset.present_of(name) & (dataset.splits == SPLIT_CODES[split])
    return encoding.preprocess(dataset.arrays[name][rows]), dataset.labels[rows]


def train_sensor(
    name: str, spec: SensorSpec, dataset: MultiSensorDataset, progress: Progress | None = None
) -> SensorTrainResult:
    """Train sensor `name`'s model (from scratch or fine-tuned, by its plan) and return it at its best epoch."""
    report = progress or (lambda _event: None)
    torch.set_num_threads(spec.training.threads or torch.get_num_threads())
    started = time.perf_counter()
    torch.manual_seed(spec.training.seed)  # model init (a pretrained backbone's new head too): same seed, same model
    if spec.model.family == "timm":
        model, val_accuracy, stages = _train_image_sensor(name, spec, dataset, report)
        return SensorTrainResult(
            name, model, sensor_encoding(model, spec.model), val_accuracy, time.perf_counter() - started, stages
        )
    model = create_model(spec.model, dataset.num_classes)
    encoding = sensor_encoding(model, spec.model)
    train_inputs, train_labels = sensor_split(dataset, name, "train", encoding)
    val_inputs, val_labels = sensor_split(dataset, name, "val", encoding)
    fit = fit_tensor_model(
        model,
        {"inputs": train_inputs},
        train_labels,
        {"inputs": val_inputs},
        val_labels,
        spec.training,
        pretrained=spec.model.pretrained is not None,
        progress=report,
        name=name,
    )
    return SensorTrainResult(
        name, model, encoding, fit.best_val_accuracy, time.perf_counter() - started, fit.stages, fit.history
    )


def sensor_test_accuracy(result: SensorTrainResult, dataset: MultiSensorDataset, split: str = "test") -> float:
    """Accuracy of the sensor model alone on the split's events that have its sample."""
    inputs, labels = sensor_split(dataset, result.name, split, result.encoding)
    logits = predict_logits(result.model, {"inputs": inputs}, single_input, 256)
    return float((logits.argmax(1).numpy() == labels).mean()) if len(labels) else float("nan")
