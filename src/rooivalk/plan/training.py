"""The `training` section of a plan: stages, optimizers, schedulers, losses, augmentation, checkpoints.

Split from rooivalk.plan to keep modules small; rooivalk.plan re-exports every name here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from rooivalk.plan.base import Strict
from rooivalk.plan.detection import DetectionAugmentSpec


class StageLR(Strict):
    """Learning rates of one stage; exactly one rule.

    - `head` (+ `backbone`): the classifier's LR, and one LR for every trainable backbone group or
      [first, last], a geometric spread from the earliest to the latest trainable group.
    - `spread: [low, high]`: geometric over all trainable groups, head included.
    - `top` + `ratio`: discriminative (ULMFiT) rates: the head gets `top`, and each group further
      down the stack gets the previous group's LR divided by `ratio` (2.6 in ULMFiT). A ratio below 1
      gives the early groups the higher LRs, for shifts in the input itself (new sensor, resolution or
      colour), where the early layers have the most to relearn (Lee et al. 2023, "surgical fine-tuning").
    """

    head: float | None = Field(None, gt=0)
    backbone: float | tuple[float, float] | None = None
    spread: tuple[float, float] | None = None
    top: float | None = Field(None, gt=0)
    ratio: float | None = Field(None, gt=0, description="below 1: each earlier group gets a higher LR")

    @model_validator(mode="after")
    def _one_rule(self) -> StageLR:
        rules = [self.spread is not None, self.head is not None or self.backbone is not None, self.top is not None]
        if sum(rules) != 1:
            raise ValueError("give exactly one LR rule: 'spread', 'head'/'backbone', or 'top'/'ratio'")
        if (self.top is None) != (self.ratio is None):
            raise ValueError("'top' and 'ratio' go together")
        return self


class OptimizerSpec(Strict):
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only.")
    nesterov: bool = False
    fused: bool = Field(
        True,
        description="torch's fused update (one kernel over all parameters) where every parameter is a float "
        "tensor on CPU or CUDA, else the foreach update; false: always foreach.",
    )
    decay_groups: list[str] | None = Field(
        None,
        description="Layer groups whose weights get weight_decay (selectors as in stages[].train: head, last:N, "
        "all, a group name); the other groups train without it, e.g. [head] for L2 on the dense layers only. "
        "null: every group.",
    )


class SchedulerSpec(Strict):
    """Per-stage LR schedule. `cosine`: linear warmup then cosine to `min_lr_ratio` x base LR.
    `slanted_triangular`: ULMFiT's STLR, a linear rise over `cut_fraction` of the stage then a linear
    fall to base LR / `stlr_ratio`. `onecycle`: torch OneCycleLR with the stage's LRs as max LRs.
    `plateau`: ReduceLROnPlateau on the monitored metric. `cosine_restarts`: CosineAnnealingWarmRestarts
    (T_0 in epochs)."""

    name: Literal["cosine", "slanted_triangular", "onecycle", "plateau", "cosine_restarts", "constant"] = "cosine"
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="cosine: linear warmup share of the stage.")
    warmup_epochs: float | None = Field(None, ge=0, description="cosine: warmup in epochs (overrides the fraction).")
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    new_group_warmup_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="cosine / slanted_triangular: groups unfrozen by this stage ramp linearly from 1% of "
        "their LR over this share of the stage, while groups that trained before keep their schedule.",
    )
    cut_fraction: float = Field(0.1, gt=0, lt=1, description="slanted_triangular: share of the stage spent rising")
    stlr_ratio: float = Field(32.0, ge=1, description="slanted_triangular: peak LR / lowest LR")
    pct_start: float = Field(0.3, gt=0, lt=1, description="onecycle")
    factor: float = Field(0.1, gt=0, lt=1, description="plateau")
    patience: int = Field(2, ge=0, description="plateau, in epochs")
    min_lr: float = Field(0.0, ge=0, description="plateau")
    restart_epochs: int = Field(1, ge=1, description="cosine_restarts: T_0 in epochs")
    restart_mult: int = Field(1, ge=1, description="cosine_restarts: T_mult")


class LossSpec(Strict):
    name: Literal["cross_entropy", "focal"] = "cross_entropy"
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    focal_gamma: float = Field(2.0, ge=0)
    focal_alpha: float | None = Field(None, gt=0, lt=1, description="focal: weight of the positive class term.")
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="balanced: weight each class by n_samples / (n_classes * count) from the training split."
    )


class MixSpec(Strict):
    """Mixup and CutMix on each training batch; when both alphas are set, one is picked per batch."""

    mixup_alpha: float = Field(0.0, ge=0)
    cutmix_alpha: float = Field(0.0, ge=0)
    prob: float = Field(1.0, ge=0, le=1, description="chance a batch is mixed at all")
    switch_prob: float = Field(0.5, ge=0, le=1, description="chance of CutMix when both are enabled")


class AugmentSpec(Strict):
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


class SequenceAugmentSpec(Strict):
    """Augmentations of sequence batches (rooivalk.training.tasks.sequence_augment), applied to raw features
    before standardization. Rotation about the wrist and wrist-centred scaling need the data to declare a
    hand: 21 landmarks named x0, y0, z0, ..., z20; other data gets scaling about zero, one offset per
    feature, noise and time shifts."""

    probability: float = Field(0.5, ge=0, le=1, description="chance of each effect, per sequence")
    rotation_degrees: float = Field(15.0, ge=0, le=180, description="hand data: about each axis, uniform in +-")
    scale: tuple[float, float] = Field((0.9, 1.1), description="uniform scale range (low, high)")
    translation: float = Field(0.05, ge=0, description="uniform offset in +-, in the features' units")
    noise_std: float = Field(0.01, ge=0, description="Gaussian noise, in the features' units")
    time_shift: float = Field(0.1, ge=0, lt=1, description="largest shift in time, as a share of the length")

    @model_validator(mode="after")
    def _scale_range(self) -> SequenceAugmentSpec:
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {list(self.scale)}")
        return self


class DistillationSpec(Strict):
    """Knowledge distillation (Hinton et al. 2015): the student also learns the teacher's class
    probabilities softened by `temperature`. The training loss is
    `(1 - weight) * plan loss + weight * temperature^2 * KL(p_teacher || p_student)`, with
    p = softmax(logits / temperature); an ensemble teacher's p is the mean of its members'."""

    teacher: str | list[str] = Field(
        description="A trained rooivalk classifier (model folder: local path, file:// or s3:// URI) whose classes and "
        "inputs are the student's, or a list of them: an ensemble whose softened probabilities are averaged."
    )
    temperature: float = Field(4.0, gt=0, description="softens both distributions; the KD term is scaled by its square")
    weight: float = Field(0.5, ge=0, le=1, description="weight of the KD term; 1 - weight goes to the plan's loss")

    @field_validator("teacher")
    @classmethod
    def _some_teacher(cls, teacher: str | list[str]) -> str | list[str]:
        uris = [teacher] if isinstance(teacher, str) else teacher
        if not uris or not all(uri.strip() for uri in uris):
            raise ValueError("give a model folder or URI, or a non-empty list of them")
        return teacher

    @property
    def teachers(self) -> list[str]:
        return [self.teacher] if isinstance(self.teacher, str) else list(self.teacher)


class EMASpec(Strict):
    enabled: bool = False
    decay: float = Field(0.999, gt=0, lt=1)
    evaluate_with_ema: bool = Field(True, description="Validate and save the EMA weights.")


class EarlyStoppingSpec(Strict):
    enabled: bool = False
    monitor: str = "val_accuracy"
    mode: Literal["max", "min"] = "max"
    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0)
    restore_best: bool = True


class CheckpointSpec(Strict):
    uri: str | None = Field(
        None,
        description="Where checkpoints live; a rerun with the same URI resumes. "
        "null: `rooivalk run` uses <out>/checkpoints/train_model; the library, a scratch dir (no resume).",
    )
    every_epochs: int = Field(1, ge=1)
    every_steps: int | None = Field(None, ge=1, description="Also save within an epoch every N optimizer steps.")
    keep_last: int = Field(3, ge=1)
    resume: bool = True


class DistributedSpec(Strict):
    nproc_per_node: int = Field(1, ge=1)
    nnodes: int = Field(1, ge=1)
    backend: Literal["auto", "gloo", "nccl"] = "auto"

    @property
    def processes(self) -> int:
        """Training processes in all (every node's): more than 1 is distributed training."""
        return self.nproc_per_node * self.nnodes


class StageSpec(Strict):
    """One stage. Its length is `epochs`, or `seconds` of wall-clock training (converted to a step
    count at the stage's start from a timed probe of its own training step), or `"rest"`: what is left
    of `training.budget_seconds` when the stage starts."""

    name: str
    epochs: int | None = Field(None, ge=1)
    seconds: float | Literal["rest"] | None = Field(None, description="wall-clock length instead of epochs")
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
    max_samples: int | None = Field(
        None,
        ge=1,
        description="Epochs of this stage cover a fixed, seeded subset of this many training samples "
        "(a cached head stage then extracts only those: a linear probe needs far fewer than a full pass).",
    )
    input_size: int | None = Field(
        None,
        ge=8,
        description="Train this stage on images resized to this many pixels instead of model.input_size "
        "(progressive resizing: a smaller stage costs fewer FLOPs a step). Validation, the test and the "
        "exported model always use model.input_size.",
    )
    sequence_augment_probability: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Sequence models: this stage's chance of each sequence augmentation (e.g. 0.3 in a last, "
        "gentler phase); null: training.sequence_augment.probability.",
    )
    augment_strength: float | None = Field(
        None,
        ge=0,
        description="Detectors: this stage's strength of training.detection_augment (e.g. 1 heavy while the "
        "head learns, 0.25 light at the end); null: training.detection_augment.strength.",
    )

    @model_validator(mode="after")
    def _one_length(self) -> StageSpec:
        if (self.epochs is None) == (self.seconds is None):
            raise ValueError(f"stage {self.name!r}: give exactly one of 'epochs' and 'seconds'")
        if isinstance(self.seconds, float | int) and self.seconds <= 0:
            raise ValueError(f"stage {self.name!r}: 'seconds' must be > 0")
        return self


class AutoScheduleSpec(Strict):
    """`schedule: auto`: a cached linear probe, then every group together.

    Every BatchNorm's statistics are first re-estimated on the target data (`bn_unfreeze:
    recalibrate`), the head learns on cached features of the frozen backbone for a few cheap epochs
    over a subset, then all groups train with LRs from `top` at the head down to `top / lowest_ratio`
    at the stem (geometric per group). The default is one LR for all groups (docs/training.md says
    when to change it).
    """

    head_epochs: int = Field(5, ge=1, description="linear-probe epochs on cached features (cheap)")
    head_samples: int | None = Field(
        10_000, ge=1, description="training samples the linear probe sees (null: all); extraction is its main cost"
    )
    head_lr: float = Field(3e-3, gt=0)
    top: float = Field(1e-3, gt=0, description="the head's LR in the full stage")
    lowest_ratio: float = Field(
        1.0,
        gt=0,
        description="top LR / the earliest group's LR in the full stage; the per-group ratio follows. "
        "Below 1 the earliest groups get the higher LRs (input-level domain shift).",
    )
    scheduler: SchedulerSpec = SchedulerSpec(name="cosine", warmup_fraction=0.05, new_group_warmup_fraction=0.1)


class PruningSpec(Strict):
    """Prune the trained model, then fine-tune it (a phase after the plan's stages; see docs/training.md)."""

    method: Literal["magnitude", "channels"] = Field(
        "magnitude",
        description="magnitude: zero the smallest weights of every conv and linear layer (unstructured; the "
        "tensors keep their shapes); channels: remove whole output channels by their norm (structured; the "
        "layers get smaller).",
    )
    amount: float = Field(0.5, gt=0, lt=1, description="share of weights (magnitude) or channels (channels) removed")
    epochs: int = Field(3, ge=1, description="fine-tuning epochs after pruning")
    lr: float = Field(1e-4, gt=0, description="LR of every group while fine-tuning")


class QATSpec(Strict):
    """Quantization-aware fine-tuning: the trained model trains on with fake quantization of what ONNX
    Runtime's static INT8 (QDQ) runs in 8 bits: the inputs (uint8, per tensor) and weights (int8, per
    output channel) of every conv and linear layer. A phase after the plan's stages (and after pruning)."""

    epochs: int = Field(3, ge=1, description="fine-tuning epochs with fake quantization")
    lr: float = Field(1e-4, gt=0, description="LR of every group while fine-tuning")
    observer_momentum: float = Field(
        0.01, gt=0, le=1, description="moving-average weight of a batch's min/max in each activation range"
    )


class TrainingSpec(Strict):
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    stages: list[StageSpec] | None = Field(
        None, description="Explicit stages; null: `schedule` picks them (one full stage when training from scratch)."
    )
    schedule: Literal["auto", "reference"] = Field(
        "auto",
        description="Pretrained models without explicit stages. auto: cached head stage, then all groups "
        "with per-group LRs (see `auto`); reference: the reference plan's three stages (head; last:2 + head; "
        "all at 1e-7..1e-3).",
    )
    auto: AutoScheduleSpec = AutoScheduleSpec()
    budget_seconds: float | None = Field(
        None,
        gt=0,
        description="Wall-clock training budget: a stage with seconds: rest (the auto schedule's last "
        "stage) gets what is left of it when it starts. null: the auto schedule's last stage runs `epochs`.",
    )
    epochs: int = Field(
        10, ge=1, description="Epochs of the single from-scratch stage, and of auto's last stage without a budget."
    )
    lr: float = Field(1e-3, gt=0, description="LR of the single from-scratch stage.")
    optimizer: OptimizerSpec = OptimizerSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    loss: LossSpec = LossSpec()
    mix: MixSpec = MixSpec()
    augment: AugmentSpec = AugmentSpec()
    sequence_augment: SequenceAugmentSpec | None = Field(
        None, description="Sequence models: augment training sequences; null: no augmentation."
    )
    detection_augment: DetectionAugmentSpec | None = Field(
        None, description="Detectors: box-aware augmentation of training images; null: none (letterbox only)."
    )
    oversample: dict[str, Annotated[int, Field(ge=1, le=100)]] | None = Field(
        None,
        description="Detectors: class name -> factor; a training image holding the class is seen that many times "
        "per epoch (the highest factor of its classes), e.g. {drone: 3} for a critical class.",
    )
    distillation: DistillationSpec | None = Field(
        None,
        description="Classifiers: also learn a trained teacher's softened class probabilities on each training batch "
        "(see DistillationSpec); null: no teacher.",
    )
    ema: EMASpec = EMASpec()
    early_stopping: EarlyStoppingSpec = EarlyStoppingSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    distributed: DistributedSpec = DistributedSpec()
    grad_clip_norm: float | None = Field(1.0, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="bf16 autocast (CPU/GPU); fp16 needs a GPU.")
    feature_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="Forward-only feature extraction for cache_features stages. auto: bf16 autocast where "
        "the device has native bf16 (forward passes gain there even where bf16 training does not), else fp32.",
    )
    bn_frozen: Literal["eval", "train"] = Field(
        "eval", description="BatchNorm in frozen groups: eval keeps its statistics, train updates them."
    )
    bn_unfreeze: Literal["keep", "recalibrate", "affine_early"] = Field(
        "recalibrate",
        description="BatchNorm of pretrained groups before they unfreeze. keep: the pretrained statistics; "
        "recalibrate: re-estimate every BatchNorm's running statistics on training batches before the "
        "first stage (frozen groups then compute with target-data statistics, and a group unfreezes "
        "with statistics that match its inputs); affine_early: BatchNorm weights and biases of all "
        "groups train from the first stage (statistics stay frozen; rules out cache_features).",
    )
    bn_recalibration_batches: int = Field(50, ge=1, description="training batches for bn_unfreeze: recalibrate")
    deterministic: bool = Field(False, description="Deterministic kernels: a resumed run is bit-identical.")
    seed: int = 0
    batch_sampling: Literal["random", "stratified", "balanced"] = Field(
        "random",
        description="How an epoch orders the training samples. random: a shuffle; stratified: every batch holds "
        "the classes in their training proportions; balanced: samples drawn with replacement, each class "
        "equally likely (rare classes seen as often as common ones).",
    )
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; null: all cores.")
    channels_last: bool = True
    max_train_batches: int | None = Field(None, ge=1, description="Cap per epoch, for smoke runs.")
    pruning: PruningSpec | None = Field(None, description="Prune and fine-tune after the stages; null: no pruning.")
    qat: QATSpec | None = Field(
        None, description="Quantization-aware fine-tuning after the stages (and pruning); null: none."
    )
