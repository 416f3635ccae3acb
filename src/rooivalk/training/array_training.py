"""`train_model` for sequence and table plans: an rnn or mlp model on an array dataset, through the engine.

The dataset fills in what the plan leaves to it (`model.num_features: auto`, `model.num_classes:
auto`); the model trains through rooivalk.training.engine.fitting.fit_model (stages, optimizer and
decay groups, schedulers, early stopping, checkpoints and resume, batch sampling, EMA, loggers), and
the artifact (rooivalk.models.array_artifact) carries the dataset's encoding for export.
"""

from __future__ import annotations

import json

import torch

from rooivalk import storage
from rooivalk.data.datasets import ArrayDataset, load_array_dataset
from rooivalk.data.sequence_dataset import SequenceDataset
from rooivalk.data.table_dataset import TableDataset, model_input_names, model_inputs
from rooivalk.events import MetricsFn, ProgressFn
from rooivalk.models.array_artifact import ArrayModelInfo, save_array_model
from rooivalk.models.array_inference import LENGTHS, SEQUENCES
from rooivalk.models.groups import layer_groups
from rooivalk.models.registry import create_model
from rooivalk.models.rnn import parameter_count
from rooivalk.plan import ModelSpec, Plan, SequenceAugmentSpec
from rooivalk.training.engine.distillation import Teacher
from rooivalk.training.engine.fitting import fit_model
from rooivalk.training.engine.loop import Trainer
from rooivalk.training.engine.runtime import seed_everything
from rooivalk.training.engine.stages import model_stages
from rooivalk.training.ensemble_training import train_ensemble_member
from rooivalk.training.results import HISTORY_FILE, TrainResult, stage_metrics
from rooivalk.training.tasks.arrays import SequenceClassification, TableClassification
from rooivalk.training.tasks.sequence_augment import SequenceAugment, SequenceAugmentSettings, landmark_layout
from rooivalk.training.tasks.tensor import TensorClassification
from rooivalk.training.teachers import array_teacher


def resolved_model_spec(spec: ModelSpec, dataset: ArrayDataset) -> ModelSpec:
    """The plan's model with the dataset's feature and class counts; a count the plan fixed must match."""
    features = len(input_names(dataset))
    classes = len(dataset.info.classes)
    for key, wanted, found in (
        ("num_features", spec.num_features, features),
        ("num_classes", spec.num_classes, classes),
    ):
        if wanted != "auto" and wanted != found:
            raise ValueError(f"model.{key} is {wanted} but dataset {dataset.info.version_id} has {found}")
    return spec.model_copy(update={"num_features": features, "num_classes": classes})


def input_names(dataset: ArrayDataset) -> list[str]:
    if isinstance(dataset, SequenceDataset):
        return list(dataset.info.feature_names)
    return model_input_names(dataset.info)


def sequence_augment(spec: SequenceAugmentSpec | None, feature_names: list[str]) -> SequenceAugment | None:
    if spec is None:
        return None
    settings = SequenceAugmentSettings(**spec.model_dump())  # the plan section's fields, one for one
    return SequenceAugment(settings, landmark_layout(feature_names))


def array_task(plan: Plan, dataset: ArrayDataset) -> TensorClassification:
    """The engine task of the plan's model on the dataset's train and val splits."""
    if isinstance(dataset, SequenceDataset):
        splits = {}
        for split in ("train", "val"):
            sequences, lengths, labels = dataset.subset(split)
            splits[split] = ({SEQUENCES: sequences, LENGTHS: lengths}, labels)
        standardization = dataset.info.standardization
        return SequenceClassification(
            *splits["train"],
            *splits["val"],
            dataset.num_classes,
            mean=standardization.mean,  # type: ignore[arg-type]
            std=standardization.std,  # type: ignore[arg-type]
            augment=sequence_augment(plan.training.sequence_augment, list(dataset.info.feature_names)),
        )
    rows = {}
    for split in ("train", "val"):
        numeric, codes, labels = dataset.subset(split)
        rows[split] = ({"inputs": model_inputs(dataset.info, numeric, codes)}, labels)
    return TableClassification(*rows["train"], *rows["val"], dataset.num_classes)


def model_info(plan: Plan, spec: ModelSpec, dataset: ArrayDataset) -> ArrayModelInfo:
    common = {
        "spec": spec,
        "classes": list(dataset.info.classes),
        "input_names": input_names(dataset),
        "dataset_version": dataset.info.version_id,
        "plan_digest": plan.digest(),
    }
    if isinstance(dataset, TableDataset):
        return ArrayModelInfo(kind="table", table=dataset.info.model_dump(mode="json"), **common)
    standardization = dataset.info.standardization
    return ArrayModelInfo(
        kind="sequences",
        length=dataset.info.length,
        mean=standardization.mean,
        std=standardization.std,
        **common,
    )


def array_trainer(
    plan: Plan, dataset_dir: str, device: torch.device, progress: ProgressFn, log_metrics: MetricsFn
) -> Trainer:
    """A Trainer of the plan's rnn or mlp model on the dataset, saving nothing (what `rooivalk lr-find` sweeps)."""
    dataset = load_array_dataset(dataset_dir)
    spec = resolved_model_spec(plan.single_model, dataset)
    seed_everything(plan.training.seed, False)  # the initial weights are the seed's
    model = create_model(spec, len(dataset.info.classes)).to(device)
    groups = layer_groups(model)
    task = array_task(plan, dataset)
    stages = model_stages(plan.training, spec.pretrained is not None, groups, task.can_cache_features(model))
    teacher = _teacher(plan, model_info(plan, spec, dataset))
    return Trainer(
        model,
        groups,
        stages,
        array_task(plan, dataset),
        plan.training,
        progress,
        log_metrics,
        None,
        device=device,
        teacher=teacher,
    )


def _teacher(plan: Plan, student: ArrayModelInfo) -> Teacher | None:
    """training.distillation's teacher, checked against the student's classes and inputs."""
    distillation = plan.training.distillation
    return None if distillation is None else array_teacher(distillation, student)


def train_array_model(
    plan: Plan,
    dataset_dir: str,
    model_dir: str,
    progress: ProgressFn | None = None,
    log_metrics: MetricsFn | None = None,
) -> TrainResult:
    """Train the plan's rnn or mlp model on the array dataset at `dataset_dir`; write it to `model_dir`.
    (With `evaluation.cross_validation`, rooivalk.training.trainer.train_model runs the folds first.)"""
    if plan.training.distributed.processes > 1:
        raise ValueError("training.distributed: sequence and table models train in one process")
    dataset = load_array_dataset(dataset_dir)
    return train_array_on(plan, dataset, model_dir, progress, log_metrics, plan.training.checkpoint.uri)


def train_array_on(
    plan: Plan,
    dataset: ArrayDataset,
    model_dir: str,
    progress: ProgressFn | None,
    log_metrics: MetricsFn | None,
    checkpoint_uri: str | None,
) -> TrainResult:
    """Train on the dataset's train split, choosing the best epoch on its val split; write the model to
    `model_dir` (a fold of a cross-validation passes a dataset whose splits are the fold's)."""
    spec = resolved_model_spec(plan.single_model, dataset)
    # Seeded before the model is built: its initial weights are the seed's, so a rerun trains the same model.
    seed_everything(plan.training.seed, plan.training.deterministic)
    model = create_model(spec, len(dataset.info.classes))
    task = array_task(plan, dataset)
    info = model_info(plan, spec, dataset)
    fit = fit_model(
        model,
        task,
        plan.training,
        pretrained=spec.pretrained is not None,
        checkpoint_uri=checkpoint_uri,
        plan_digest=plan.digest(),
        progress=progress,
        log_metrics=log_metrics,
        teacher=_teacher(plan, info),
    )
    ensemble_metrics: dict[str, float] = {}
    if plan.ensemble is not None:
        if not isinstance(dataset, TableDataset):
            raise ValueError("ensemble: applies to table plans")
        info.ensemble, ensemble_metrics = train_ensemble_member(plan, dataset, model, model_dir, progress, log_metrics)
    artifacts = save_array_model(model_dir, model, info)
    artifacts[HISTORY_FILE] = storage.write_text(f"{model_dir}/{HISTORY_FILE}", json.dumps(fit.stages, indent=2))
    metrics = {
        "best_val_accuracy": fit.best_val_accuracy,
        "best_epoch": float(fit.best_epoch),
        "train_seconds": fit.seconds,
        "num_stages": float(len(fit.stages)),
        "parameters": float(parameter_count(model)),
        "num_features": float(spec.num_features),
        **ensemble_metrics,
        **fit.compression,
    }
    metrics |= stage_metrics(fit.stages)
    history = [({k: v for k, v in h.items() if isinstance(v, float)}, int(h["epoch"])) for h in fit.history]
    return TrainResult(metrics, fit.stages, artifacts, resumed_from=fit.resumed_from, history=history)
