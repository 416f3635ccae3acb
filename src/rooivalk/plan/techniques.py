"""Which training keys apply to which model: every key a plan sets is honoured or refused, never ignored.

A plan trains models in up to three kinds of section: `training` (the model of a single-model plan),
`sensors.<name>.training` (each sensor's model) and `fusion.training` (the fusion transformer over
cached embeddings). What a section may set depends on its model's task (`image`, `tensor`, `fusion`)
and on how it trains (pretrained weights or from scratch, explicit stages or a schedule). `KEY_RULES`
classifies every leaf of `TrainingSpec`; `technique_problems` lists each set key the model would not
use, with its full path and the reason. A key is set when it differs from its section's default, so a
plan dumped with every field (a KFP parameter) reads the same as the file it came from.

Checking a plan must not import torch: built-in families have their task in `BUILTIN_TASKS`, and only
a plugin family asks the model registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any, cast

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from rooivalk.plan.compression_rules import distillation_rule, pruning_rule, qat_rule
from rooivalk.plan.training import TrainingSpec
from rooivalk.plan.training_sections import (
    ARRAY_TASKS,
    BUILTIN_TASKS,
    DETECTION_MONITORED_METRICS,
    DETECTION_TASK,
    FUSION_TASK,
    MONITORED_METRICS,
    MULTI_SENSOR_TOP_LEVEL,
    ModelTraining,
    ModelView,
    PlanView,
    PluginResolver,
    Problem,
    Rule,
)

# Imported from here by the rest of rooivalk.plan (model_keys, loading) and by tests.
__all__ = [
    "ARRAY_TASKS",
    "BUILTIN_TASKS",
    "DETECTION_TASK",
    "KEY_RULES",
    "ModelTraining",
    "PluginResolver",
    "Problem",
    "rule_for",
    "set_leaves",
    "technique_problems",
    "training_sections",
]


def _honoured(_: ModelTraining) -> None:
    return None


def _image_only(subject: str) -> Rule:
    """A technique of image batches: `subject` reads "<technique> does" (or "do")."""

    def rule(section: ModelTraining) -> str | None:
        if takes_image_batches(section.task):
            return None
        return f"{subject} not apply to {section.family} inputs ({section.task} task)"

    return rule


def _not_fusion(section: ModelTraining) -> str | None:
    if section.task == FUSION_TASK:
        return "the fusion model's inputs are already cached embeddings"
    return None


def _cache_features(section: ModelTraining) -> str | None:
    if section.task in ARRAY_TASKS or section.task == DETECTION_TASK:
        return f"{section.family} models have no frozen encoder whose features a head stage could cache"
    return _not_fusion(section)


def _sequence_only(section: ModelTraining) -> str | None:
    if section.task == "sequence":
        return None
    return f"sequence augmentation applies to sequence models (family rnn), not {section.family} ({section.task} task)"


def _detection_only(section: ModelTraining) -> str | None:
    if section.task == DETECTION_TASK:
        return None
    return f"box-aware augmentation applies to detectors (family detector), not {section.family} ({section.task} task)"


def _stage_detection_augment(section: ModelTraining) -> str | None:
    if section.task == DETECTION_TASK and section.training.detection_augment is None:
        return "training.detection_augment is null: there is no augmentation whose strength a stage could set"
    return _detection_only(section)


def _not_detection(subject: str) -> Rule:
    """A classification technique: `subject` reads "<technique> does"."""

    def rule(section: ModelTraining) -> str | None:
        if section.task == DETECTION_TASK:
            return f"{subject} not apply to detectors: FCOS's own focal, GIoU and centerness losses train them"
        return None

    return rule


def _stage_augment(section: ModelTraining) -> str | None:
    if section.task == "sequence" and section.training.sequence_augment is None:
        return "training.sequence_augment is null: there is no augmentation whose probability a stage could set"
    return _sequence_only(section)


def _batch_norm(section: ModelTraining) -> str | None:
    if section.task == "sequence":
        return f"{section.family} models have no BatchNorm"
    return None


def _schedule(section: ModelTraining) -> str | None:
    if section.staged:
        return "explicit stages given: schedule and auto pick the stages only when stages is null"
    if not section.pretrained:
        return f"{section.from_scratch}: schedule and auto apply to pretrained weights"
    return None


def _auto(section: ModelTraining) -> str | None:
    reason = _schedule(section)
    if reason is None and section.training.schedule != "auto":
        return f"schedule: {section.training.schedule} runs its own stages; auto applies to schedule: auto"
    return reason


def _lr(section: ModelTraining) -> str | None:
    if section.staged:
        return "explicit stages given: each stage sets its own lr"
    if section.pretrained:
        rates = " (auto.head_lr, auto.top)" if section.training.schedule == "auto" else ""
        return (
            f"{section.model_path}.pretrained is set: schedule {section.training.schedule} sets the learning "
            f"rates{rates}; lr applies to training from scratch"
        )
    return None


def _epochs(section: ModelTraining) -> str | None:
    if section.staged:
        return "explicit stages given: each stage sets its own epochs"
    if not section.pretrained:
        return None
    if section.training.schedule != "auto":
        return f"schedule: {section.training.schedule} runs its own epochs"
    if section.training.budget_seconds is not None:
        return "budget_seconds is set: schedule auto's last stage runs for the rest of the budget, not epochs"
    return None


def _budget_seconds(section: ModelTraining) -> str | None:
    if section.staged:
        if any(stage.seconds == "rest" for stage in section.training.stages or []):
            return None
        return "no stage runs seconds: rest, the one stage length a budget sets"
    if not section.pretrained:
        return f"{section.from_scratch}: its one stage runs epochs (give stages with seconds: rest to train by budget)"
    if section.training.schedule != "auto":
        return f"schedule: {section.training.schedule} runs fixed epochs; a budget applies to schedule: auto"
    return None


def _distributed(section: ModelTraining) -> str | None:
    if section.task in ARRAY_TASKS or section.task == DETECTION_TASK:
        return f"{section.family} models train in one process; distributed applies to image classifiers"
    if section.in_pipeline:
        return "the multi-sensor pipeline's steps train in one process; distributed applies to single-model plans"
    return None


# Every leaf of TrainingSpec, by path with list indices as `*`; `group.*` covers a whole sub-section.
# A new key needs a line here (tests/unit/plan/test_plan_techniques.py checks that every leaf has one).
KEY_RULES: dict[str, Rule] = {
    "batch_size": _honoured,
    "eval_batch_size": _honoured,
    "stages": _honoured,  # set but empty: no explicit stages, the same as null
    "stages.*.name": _honoured,
    "stages.*.epochs": _honoured,
    "stages.*.seconds": _honoured,
    "stages.*.train": _honoured,
    "stages.*.lr.*": _honoured,
    "stages.*.warmup_epochs": _honoured,
    "stages.*.optimizer": _honoured,  # given with its defaults: the stage's own optimizer, as training.optimizer
    "stages.*.optimizer.*": _honoured,
    "stages.*.scheduler": _honoured,
    "stages.*.scheduler.*": _honoured,
    "stages.*.cache_features": _cache_features,
    "stages.*.sequence_augment_probability": _stage_augment,
    "stages.*.augment_strength": _stage_detection_augment,
    "stages.*.max_samples": _honoured,
    "stages.*.input_size": _image_only("progressive resizing is for images and does"),
    "schedule": _schedule,
    "auto.*": _auto,
    "budget_seconds": _budget_seconds,
    "epochs": _epochs,
    "lr": _lr,
    "optimizer.*": _honoured,
    "scheduler.*": _honoured,
    "loss.*": _not_detection("the classification loss settings do"),
    "mix.*": _image_only("Mixup/CutMix are image techniques and do"),
    "augment.*": _image_only("image augmentation does"),
    "sequence_augment": _sequence_only,
    "sequence_augment.*": _sequence_only,
    "detection_augment": _detection_only,
    "detection_augment.*": _detection_only,
    "oversample": _detection_only,
    "oversample.*": _detection_only,
    "distillation.*": distillation_rule,  # schedule auto's head stage then runs uncached (engine.stages)
    "ema.*": _honoured,
    "early_stopping.*": _honoured,  # monitor and mode are also checked against the logged metrics
    "checkpoint.*": _honoured,
    "distributed.*": _distributed,
    "grad_clip_norm": _honoured,
    "precision": _honoured,
    "feature_precision": _cache_features,
    "bn_frozen": _batch_norm,
    "bn_unfreeze": _batch_norm,
    "bn_recalibration_batches": _batch_norm,
    "deterministic": _honoured,
    "seed": _honoured,
    "batch_sampling": _honoured,  # every task has training labels
    "threads": _honoured,
    "channels_last": _image_only("channels_last sets the memory format of image batches and does"),
    "max_train_batches": _honoured,
    "pruning": pruning_rule,
    "pruning.*": pruning_rule,
    "qat": qat_rule,
    "qat.*": qat_rule,
}


def rule_for(leaf: str) -> Rule:
    """The rule of a TrainingSpec leaf (`augment.fog`, `stages.0.input_size`): its own or its group's."""
    parts = ["*" if part.isdigit() else part for part in leaf.split(".")]
    for end in range(len(parts), 0, -1):
        key = ".".join(parts[:end]) + ("" if end == len(parts) else ".*")
        if key in KEY_RULES:
            return KEY_RULES[key]
    raise LookupError(f"training.{leaf} is not classified: add it to rooivalk.plan.techniques.KEY_RULES")


def set_leaves(value: BaseModel, default: BaseModel | None = None) -> list[str]:
    """Dotted paths of the leaves of `value` that a plan set: a leaf is set when it differs both from
    its field's default and from `default`'s (the section's default, e.g. fusion.training's epochs 30).
    A nested model without a default (a stage, a stage's optimizer) compares with its fields' defaults."""
    return list(_set_leaves(value, () if default is None else (default,), ()))


def _set_leaves(value: Any, defaults: tuple[Any, ...], path: tuple[str, ...]) -> Iterator[str]:
    if isinstance(value, BaseModel):
        nested: list[str] = []
        for name, field in type(value).model_fields.items():
            field_defaults = (
                field.get_default(call_default_factory=True),
                *(getattr(default, name) for default in defaults if isinstance(default, type(value))),
            )
            nested += _set_leaves(getattr(value, name), field_defaults, (*path, name))
        if not nested and path and None in defaults:
            nested = [".".join(path)]  # an optional section given with its defaults (sequence_augment: {}) is set
        yield from nested
    elif isinstance(value, list) and value and all(isinstance(item, BaseModel) for item in value):
        for index, item in enumerate(value):
            yield from _set_leaves(item, (), (*path, str(index)))
    elif all(default is PydanticUndefined or value != default for default in defaults):
        yield ".".join(path)


def takes_image_batches(task: str) -> bool:
    """Whether a task's batches are images: the built-in `image` task, or a plugin task that the resolver
    found built on it (recorded in _PLUGIN_IMAGE_TASKS while the section was resolved)."""
    return task == "image" or task in _PLUGIN_IMAGE_TASKS


_PLUGIN_IMAGE_TASKS: set[str] = set()


def _resolve(family: str, resolver: PluginResolver | None) -> str:
    if family in BUILTIN_TASKS:
        return BUILTIN_TASKS[family]
    if resolver is None:
        raise ValueError(
            f"model.family: {family!r} is not a built-in family; checking a plugin family needs its package "
            "(rooivalk validate, rooivalk run and pipeline steps load it)"
        )
    task, image = resolver(family)
    if image:
        _PLUGIN_IMAGE_TASKS.add(task)
    return task


def technique_problems(plan: PlanView, resolver: PluginResolver | None = None) -> list[Problem]:
    """Every training key the plan sets that its model would not use, with the reason."""
    problems: list[Problem] = []
    if plan.sensors is not None:
        default = TrainingSpec()  # Plan.training's default
        problems += [(f"training.{leaf}", MULTI_SENSOR_TOP_LEVEL) for leaf in set_leaves(plan.training, default)]
    for section in training_sections(plan, resolver):
        problems += _section_problems(section) if isinstance(section, ModelTraining) else [section]
    return problems


def training_sections(plan: PlanView, resolver: PluginResolver | None = None) -> Iterator[ModelTraining | Problem]:
    """The plan's training sections (or the problem of a model family without a known task)."""
    if plan.model is not None:
        owner = cast(type[BaseModel], type(plan))
        section = _model_section("training", "model", plan.model, plan.training, owner, False, resolver)
        yield replace(section, warm_start=plan.retraining.warm_start) if isinstance(section, ModelTraining) else section
    for name, sensor in (plan.sensors or {}).items():
        where = f"sensors.{name}"
        yield _model_section(
            f"{where}.training", f"{where}.model", sensor.model, sensor.training, type(sensor), True, resolver
        )
    if plan.fusion is not None:
        default = _default_training(type(plan.fusion))
        yield ModelTraining(
            "fusion.training", "fusion", "fusion", FUSION_TASK, False, True, plan.fusion.training, default
        )


def _model_section(
    path: str,
    model_path: str,
    model: ModelView,
    training: TrainingSpec,
    owner: type[BaseModel],
    in_pipeline: bool,
    resolver: PluginResolver | None,
) -> ModelTraining | Problem:
    try:
        task = _resolve(model.family, resolver)
    except ValueError as error:  # an unknown family, or a plugin that cannot be loaded
        return f"{model_path}.family", str(error).removeprefix("model.family: ")
    pretrained = model.pretrained is not None
    return ModelTraining(
        path, model_path, model.family, task, pretrained, in_pipeline, training, _default_training(owner)
    )


def _default_training(owner: type[BaseModel]) -> TrainingSpec:
    default = owner.model_fields["training"].get_default(call_default_factory=True)
    assert isinstance(default, TrainingSpec)
    return default


def _section_problems(section: ModelTraining) -> list[Problem]:
    # With warm_start, a model without weights trains from scratch in the training pipeline and from the
    # champion's weights in the retraining pipeline: a key either of them uses is honoured. The retraining
    # pipeline's plan has the champion's weights as model.pretrained, so its check looks at the other side.
    retrained = replace(section, pretrained=not section.pretrained) if section.warm_start else None
    problems = []
    for leaf in set_leaves(section.training, section.default):
        rule = rule_for(leaf)
        reason = rule(section)
        if reason is not None and (retrained is None or rule(retrained) is not None):
            problems.append((f"{section.path}.{leaf}", reason))
    return problems + _monitor_problems(section) + _rest_problems(section)


def _monitor_problems(section: ModelTraining) -> list[Problem]:
    spec = section.training.early_stopping
    where = f"{section.path}.early_stopping"
    metrics = DETECTION_MONITORED_METRICS if section.task == DETECTION_TASK else MONITORED_METRICS
    if spec.monitor not in metrics:
        known = ", ".join(metrics)
        reason = f"unknown metric {spec.monitor!r}; the engine logs {known} after every epoch of a {section.task} model"
        return [(f"{where}.monitor", reason)]
    better = metrics[spec.monitor]
    if spec.mode != better:
        direction = "higher" if better == "max" else "lower"
        reason = f"mode {spec.mode} contradicts monitor {spec.monitor} ({direction} is better): use mode {better}"
        return [(f"{where}.mode", reason)]
    return []


def _rest_problems(section: ModelTraining) -> list[Problem]:
    if section.training.budget_seconds is not None:
        return []
    return [
        (
            f"{section.path}.stages.{index}.seconds",
            f"rest (what is left of the budget) needs {section.path}.budget_seconds",
        )
        for index, stage in enumerate(section.training.stages or [])
        if stage.seconds == "rest"
    ]
