"""Resolve a plan's stages into concrete trainable groups and per-group learning rates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rooivalk.models.groups import HEAD, NECK, LayerGroup, resolve_selectors
from rooivalk.plan import OptimizerSpec, Plan, SchedulerSpec, StageLR, StageSpec, TrainingSpec


@dataclass(frozen=True)
class ResolvedStage:
    name: str
    epochs: int | None  # None: the stage runs for `seconds` of wall clock
    group_lrs: dict[str, float]  # trainable group name -> LR, in model order
    warmup_epochs: float | None = None
    optimizer: OptimizerSpec | None = None  # None: training.optimizer
    scheduler: SchedulerSpec | None = None  # None: training.scheduler
    cache_features: bool = False  # a head-only stage trained on cached backbone features
    seconds: float | Literal["rest"] | None = None  # wall-clock length; "rest": what the budget has left
    max_samples: int | None = None  # epochs cover a fixed seeded subset of the training split
    input_size: int | None = None  # training batches at this size (progressive resizing); None: the model's
    sequence_augment_probability: float | None = None  # sequence models; None: training.sequence_augment's
    augment_strength: float | None = None  # detectors; None: training.detection_augment's


def reference_stages() -> list[StageSpec]:
    """The reference plan's three stages (docs/reference_plan.md): head; last two groups + head; all
    groups at 1e-7..1e-3."""
    return [
        StageSpec(name="head", epochs=1, train=[HEAD], lr=StageLR(head=1e-3)),
        StageSpec(name="top", epochs=2, train=["last:2", HEAD], lr=StageLR(head=1e-3, backbone=(1e-5, 1e-4))),
        StageSpec(name="all", epochs=3, train=["all"], lr=StageLR(spread=(1e-7, 1e-3))),
    ]


def auto_stages(
    training: TrainingSpec, num_groups: int, cache_head: bool = True, new_groups: tuple[str, ...] = ()
) -> list[StageSpec]:
    """`schedule: auto`: a linear probe on cached features, then all groups with gentle per-group LRs.
    `cache_head` False (a task that cannot cache features: rnn, mlp): the probe trains the head through
    the frozen model's forward passes instead.

    The per-group ratio is derived from the model's group count so that the earliest group gets
    top / lowest_ratio whatever the depth (ULMFiT's fixed 2.6 per group would give EfficientNet-Lite0's
    stem top / 2.6^8, about 1/2000: frozen in effect). The last stage runs for what is left of
    `budget_seconds`, or `epochs` without a budget. `new_groups`: groups built new beside the head (a
    detector's feature pyramid, NECK): without pretrained weights, they learn with the head.
    """
    auto = training.auto
    ratio = auto.lowest_ratio ** (1.0 / max(num_groups - 1, 1))
    length: dict[str, Any] = {"seconds": "rest"} if training.budget_seconds else {"epochs": training.epochs}
    return [
        StageSpec(
            name="head",
            epochs=auto.head_epochs,
            train=[*new_groups, HEAD],
            lr=StageLR(head=auto.head_lr, backbone=auto.head_lr if new_groups else None),
            cache_features=cache_head and not new_groups,
            max_samples=auto.head_samples,
        ),
        StageSpec(name="all", train=["all"], lr=StageLR(top=auto.top, ratio=ratio), scheduler=auto.scheduler, **length),
    ]


def default_stages(
    pretrained: bool,
    training: TrainingSpec,
    num_groups: int,
    cache_head: bool = True,
    new_groups: tuple[str, ...] = (),
) -> list[StageSpec]:
    """The stages of a plan without explicit ones: by `training.schedule` for pretrained models, one
    full stage from scratch."""
    if not pretrained:
        return [
            StageSpec(name="full", epochs=training.epochs, train=["all"], lr=StageLR(spread=(training.lr, training.lr)))
        ]
    if training.schedule == "reference":
        return reference_stages()
    return auto_stages(training, num_groups, cache_head, new_groups)


def _geometric(low: float, high: float, count: int) -> list[float]:
    if count == 1:
        return [high]
    return [float(v) for v in np.geomspace(low, high, count)]


def group_learning_rates(trainable: list[str], lr: StageLR, stage: str) -> dict[str, float]:
    """LR per trainable group: geometric spreads run from the earliest group to the latest."""
    if lr.spread is not None:
        return dict(zip(trainable, _geometric(lr.spread[0], lr.spread[1], len(trainable)), strict=True))
    if lr.top is not None and lr.ratio is not None:
        # ULMFiT's discriminative rates: the last group gets `top`, each one below it top / ratio^k.
        depth = len(trainable)
        return {name: lr.top / lr.ratio ** (depth - 1 - k) for k, name in enumerate(trainable)}
    backbone = [name for name in trainable if name != HEAD]
    rates: dict[str, float] = {}
    if backbone:
        if lr.backbone is None:
            raise ValueError(f"stage {stage!r}: trains backbone groups {backbone} but gives no 'backbone' LR")
        spread = (lr.backbone, lr.backbone) if isinstance(lr.backbone, float | int) else lr.backbone
        rates.update(zip(backbone, _geometric(float(spread[0]), float(spread[1]), len(backbone)), strict=True))
    if HEAD in trainable:
        if lr.head is None:
            raise ValueError(f"stage {stage!r}: trains the head but gives no 'head' LR")
        rates[HEAD] = lr.head
    return {name: rates[name] for name in trainable}


def _check_decay_groups(spec: StageSpec, groups: list[LayerGroup], training: TrainingSpec | None) -> None:
    """The stage's optimizer.decay_groups name groups of this model (an error names the key's path)."""
    optimizer = spec.optimizer or (training.optimizer if training is not None else None)
    if optimizer is None or optimizer.decay_groups is None:
        return
    where = f"training.stages[{spec.name}].optimizer" if spec.optimizer else "training.optimizer"
    try:
        resolve_selectors(groups, optimizer.decay_groups)
    except ValueError as error:
        raise ValueError(f"{where}.decay_groups: {error}") from None


def resolve_stages(
    stages: list[StageSpec], groups: list[LayerGroup], training: TrainingSpec | None = None
) -> list[ResolvedStage]:
    resolved = []
    for spec in stages:
        if spec.seconds == "rest" and (training is None or training.budget_seconds is None):
            raise ValueError(f"training.stages[{spec.name}].seconds: 'rest' needs training.budget_seconds")
        try:
            trainable = resolve_selectors(groups, spec.train)
        except ValueError as error:
            raise ValueError(f"training.stages[{spec.name}].train: {error}") from None
        rates = group_learning_rates(trainable, spec.lr, spec.name)
        _check_decay_groups(spec, groups, training)
        if spec.cache_features and trainable != [HEAD]:
            raise ValueError(f"training.stages[{spec.name}].cache_features needs a head-only stage, not {trainable}")
        if spec.cache_features and training is not None and training.bn_unfreeze == "affine_early":
            raise ValueError(
                f"training.stages[{spec.name}].cache_features: training.bn_unfreeze affine_early trains "
                "BatchNorm of the frozen backbone, so its features change; use recalibrate or keep"
            )
        resolved.append(
            ResolvedStage(
                spec.name,
                spec.epochs,
                rates,
                spec.warmup_epochs,
                spec.optimizer,
                spec.scheduler,
                spec.cache_features,
                spec.seconds,
                spec.max_samples,
                spec.input_size,
                spec.sequence_augment_probability,
                spec.augment_strength,
            )
        )
    return resolved


def model_stages(
    training: TrainingSpec, pretrained: bool, groups: list[LayerGroup], cache_head: bool = True
) -> list[ResolvedStage]:
    """A training section's stages (or its default schedule) resolved on a model's groups; `cache_head`:
    whether the auto schedule's head stage may train on cached features (the model's task can cache them)."""
    # A teacher compares the student's logits on every full training batch, which a cached head stage never
    # makes: with distillation the auto head stage trains through the frozen model's forward passes instead.
    cache_head = cache_head and training.distillation is None
    new_groups = tuple(g.name for g in groups if g.name == NECK)
    stages = training.stages or default_stages(pretrained, training, len(groups), cache_head, new_groups)
    return resolve_stages(stages, groups, training)


def plan_stages(plan: Plan, groups: list[LayerGroup]) -> list[ResolvedStage]:
    """The plan's stages (or the default schedule) resolved on its model's groups."""
    return model_stages(plan.training, plan.single_model.pretrained is not None, groups)
