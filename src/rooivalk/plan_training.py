"""The `training` section of a plan: stages, optimizers, schedulers, losses, augmentation, checkpoints.

Split from rooivalk.plan to keep modules small; rooivalk.plan re-exports every name here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StageLR(_Strict):
    """Learning rates of one stage; exactly one rule.

    - `head` (+ `backbone`): the classifier's LR, and one LR for every trainable backbone group or
      [first, last], a geometric spread from the earliest to the latest trainable group.
    - `spread: [low, high]`: geometric over all trainable groups, head included.
    - `top` + `ratio`: discriminative (ULMFiT) rates: the head gets `top`, and each group further
      down the stack gets the previous group's LR divided by `ratio` (2.6 in ULMFiT).
    """

    head: float | None = Field(None, gt=0)
    backbone: float | tuple[float, float] | None = None
    spread: tuple[float, float] | None = None
    top: float | None = Field(None, gt=0)
    ratio: float | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_rule(self) -> StageLR:
        rules = [self.spread is not None, self.head is not None or self.backbone is not None, self.top is not None]
        if sum(rules) != 1:
            raise ValueError("give exactly one LR rule: 'spread', 'head'/'backbone', or 'top'/'ratio'")
        if (self.top is None) != (self.ratio is None):
            raise ValueError("'top' and 'ratio' go together")
        return self


class OptimizerSpec(_Strict):
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only.")
    nesterov: bool = False


class SchedulerSpec(_Strict):
    """Per-stage LR schedule. `cosine`: linear warmup then cosine to `min_lr_ratio` x base LR.
    `onecycle`: torch OneCycleLR with the stage's LRs as max LRs. `plateau`: ReduceLROnPlateau on
    the monitored metric. `cosine_restarts`: CosineAnnealingWarmRestarts (T_0 in epochs)."""

    name: Literal["cosine", "onecycle", "plateau", "cosine_restarts", "constant"] = "cosine"
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="cosine: linear warmup share of the stage.")
    warmup_epochs: float | None = Field(None, ge=0, description="cosine: warmup in epochs (overrides the fraction).")
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    pct_start: float = Field(0.3, gt=0, lt=1, description="onecycle")
    factor: float = Field(0.1, gt=0, lt=1, description="plateau")
    patience: int = Field(2, ge=0, description="plateau, in epochs")
    min_lr: float = Field(0.0, ge=0, description="plateau")
    restart_epochs: int = Field(1, ge=1, description="cosine_restarts: T_0 in epochs")
    restart_mult: int = Field(1, ge=1, description="cosine_restarts: T_mult")


class LossSpec(_Strict):
    name: Literal["cross_entropy", "focal"] = "cross_entropy"
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    focal_gamma: float = Field(2.0, ge=0)
    focal_alpha: float | None = Field(None, gt=0, lt=1, description="focal: weight of the positive class term.")
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="balanced: weight each class by n_samples / (n_classes * count) from the training split."
    )


class MixSpec(_Strict):
    """Mixup and CutMix on each training batch; when both alphas are set, one is picked per batch."""

    mixup_alpha: float = Field(0.0, ge=0)
    cutmix_alpha: float = Field(0.0, ge=0)
    prob: float = Field(1.0, ge=0, le=1, description="chance a batch is mixed at all")
    switch_prob: float = Field(0.5, ge=0, le=1, description="chance of CutMix when both are enabled")


class AugmentSpec(_Strict):
    """Seeded batch augmentations on float images in [0, 1], before normalization."""

    random_resized_crop: tuple[float, float] | None = Field(None, description="scale range, e.g. [0.6, 1.0]")
    hflip: float = Field(0.5, ge=0, le=1, description="probability")
    vflip: float = Field(0.0, ge=0, le=1)
    rotation: float = Field(0.0, ge=0, le=180, description="max degrees")
    color_jitter: float = Field(0.0, ge=0, le=1, description="brightness/contrast/saturation strength")
    grayscale: float = Field(0.0, ge=0, le=1, description="probability")
    fog: float = Field(0.0, ge=0, le=1, description="probability")
    rain: float = Field(0.0, ge=0, le=1, description="probability")
    motion_blur: float = Field(0.0, ge=0, le=1, description="probability")


class EMASpec(_Strict):
    enabled: bool = False
    decay: float = Field(0.999, gt=0, lt=1)
    evaluate_with_ema: bool = Field(True, description="Validate and save the EMA weights.")


class EarlyStoppingSpec(_Strict):
    enabled: bool = False
    monitor: str = "val_accuracy"
    mode: Literal["max", "min"] = "max"
    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0)
    restore_best: bool = True


class CheckpointSpec(_Strict):
    uri: str | None = Field(
        None,
        description="Where checkpoints live; a rerun with the same URI resumes. "
        "null: `rooivalk run` uses <out>/checkpoints/train_model; the library, a scratch dir (no resume).",
    )
    every_epochs: int = Field(1, ge=1)
    every_steps: int | None = Field(None, ge=1, description="Also save within an epoch every N optimizer steps.")
    keep_last: int = Field(3, ge=1)
    resume: bool = True


class DistributedSpec(_Strict):
    nproc_per_node: int = Field(1, ge=1)
    nnodes: int = Field(1, ge=1)
    backend: Literal["auto", "gloo", "nccl"] = "auto"


class StageSpec(_Strict):
    name: str
    epochs: int = Field(ge=1)
    # Group selectors: a group name from `rooivalk groups`, "head", "all", or "last:N" (the last N
    # backbone groups).
    train: list[str] = Field(min_length=1)
    lr: StageLR
    warmup_epochs: float | None = Field(None, ge=0, description="Overrides scheduler warmup for this stage.")
    optimizer: OptimizerSpec | None = Field(None, description="This stage's optimizer; null: training.optimizer.")
    scheduler: SchedulerSpec | None = Field(None, description="This stage's schedule; null: training.scheduler.")
    cache_features: bool = Field(
        False,
        description="Head-only stages: extract backbone features once and train the head on them "
        "(no image augmentation or mixing in this stage; needs bn_frozen: eval and a timm model).",
    )


class TrainingSpec(_Strict):
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    stages: list[StageSpec] | None = Field(
        None, description="Omitted: the three-stage schedule for pretrained models, one full stage otherwise."
    )
    epochs: int = Field(10, ge=1, description="Epochs of the single stage used when training from scratch.")
    lr: float = Field(1e-3, gt=0, description="LR of the single from-scratch stage.")
    optimizer: OptimizerSpec = OptimizerSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    loss: LossSpec = LossSpec()
    mix: MixSpec = MixSpec()
    augment: AugmentSpec = AugmentSpec()
    ema: EMASpec = EMASpec()
    early_stopping: EarlyStoppingSpec = EarlyStoppingSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    distributed: DistributedSpec = DistributedSpec()
    grad_clip_norm: float | None = Field(1.0, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="bf16 autocast (CPU/GPU); fp16 needs a GPU.")
    bn_frozen: Literal["eval", "train"] = Field(
        "eval", description="BatchNorm in frozen groups: eval keeps its statistics, train updates them."
    )
    deterministic: bool = Field(False, description="Deterministic kernels: a resumed run is bit-identical.")
    seed: int = 0
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; null: all cores.")
    channels_last: bool = True
    max_train_batches: int | None = Field(None, ge=1, description="Cap per epoch, for smoke runs.")
