"""Image classification: stored uint8 images -> augmented, mixed, normalized batches of a timm-style model.

Batches are made in two halves so that augmentation and Mixup/CutMix act on unit images in [0, 1]
before normalization (rooivalk.data.transforms). A stage may train at its own `input_size`
(progressive resizing); validation always runs at the model's. A head-only stage may train on
cached pooled features of the frozen backbone (timm's forward_features + forward_head(pre_logits)).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from rooivalk.data.dataset import Dataset
from rooivalk.data.transforms import iter_model_batches, normalize, to_unit_images
from rooivalk.models.timm_family import input_channels, normalization
from rooivalk.plan import AugmentSpec, MixSpec, Plan, TrainingSpec
from rooivalk.training.engine.stages import ResolvedStage
from rooivalk.training.tasks.augment import BatchAugment
from rooivalk.training.tasks.base import Autocast, Inputs, Task, score_logits
from rooivalk.training.tasks.image_input import InputSpec
from rooivalk.training.tasks.mixing import MixupCutmix


@dataclass
class TrainData:
    train: tuple[np.ndarray, np.ndarray]  # uint8 images (N, H, W, C), labels (N,)
    val: tuple[np.ndarray, np.ndarray]
    num_classes: int


class _HeadOnFeatures(nn.Module):
    """The model's own head (dropout + classifier) applied to cached pre-logit features (B, F)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.classifier = model.get_classifier()  # type: ignore[operator]
        self.drop_rate = float(getattr(model, "drop_rate", 0.0))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        dropped = nn.functional.dropout(features, p=self.drop_rate, training=True)
        return self.classifier(dropped)  # type: ignore[no-any-return]


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    images: np.ndarray,
    inputs: InputSpec,
    batch_size: int,
    device: torch.device,
    bf16: bool = False,
) -> torch.Tensor:
    """timm's pooled pre-logit features (N, F), float32, in eval mode (no dropout, stored BN
    statistics); `bf16`: the forward pass runs under bf16 autocast."""
    model.eval()
    chunks = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    with autocast:
        for _, batch in iter_model_batches(images, batch_size, *inputs.preprocessing()):
            features = model.forward_features(batch.to(device))  # type: ignore[operator]
            pooled = model.forward_head(features, pre_logits=True)  # type: ignore[operator]  # (B, F)
            chunks.append(pooled.float().cpu())
    return torch.cat(chunks)


class ImageClassification(Task):
    name: ClassVar[str] = "image"
    stage_input_size: ClassVar[bool] = True

    def __init__(
        self,
        data: TrainData,
        inputs: InputSpec,
        augment: AugmentSpec | None = None,
        mix: MixSpec | None = None,
    ) -> None:
        self.data = data
        self.inputs = inputs  # the model's preprocessing: validation, export and the default stage size
        self.num_classes = data.num_classes
        self.augment = BatchAugment(augment or AugmentSpec())
        self.mixer = MixupCutmix(mix or MixSpec(), data.num_classes)

    @classmethod
    def for_plan(cls, plan: Plan, dataset: Dataset, model: nn.Module) -> ImageClassification:
        return cls.for_model(model, plan.single_model.input_size, plan.training, dataset, len(dataset.info.classes))

    @classmethod
    def for_model(
        cls, model: nn.Module, input_size: int, training: TrainingSpec, dataset: Dataset, num_classes: int
    ) -> ImageClassification:
        """The task of `model` (its normalization and channels) on an image dataset's train and val splits."""
        mean, std = normalization(model)
        inputs = InputSpec(input_size, input_channels(model), mean, std, training.channels_last)
        data = TrainData(dataset.subset("train"), dataset.subset("val"), num_classes)
        return cls(data, inputs, training.augment, training.mix)

    @property
    def train_labels(self) -> np.ndarray:
        return self.data.train[1]

    @property
    def val_labels(self) -> np.ndarray:
        return self.data.val[1]

    def stage_inputs(self, stage: ResolvedStage) -> InputSpec:
        """Preprocessing of a stage's training batches: the model's, at the stage's own input_size if set."""
        if stage.input_size is None or stage.input_size == self.inputs.input_size:
            return self.inputs
        return replace(self.inputs, input_size=stage.input_size)

    def unit_batch(self, index: np.ndarray, inputs: InputSpec, generator: torch.Generator | None) -> torch.Tensor:
        """Training images `index` -> (B, C, S, S) in [0, 1] at `inputs.input_size`; augmented when a
        generator is given."""
        batch = to_unit_images(self.data.train[0][index], inputs.input_size, inputs.in_chans)
        if generator is not None and self.augment.enabled:
            batch = self.augment(batch, generator)
        return batch

    def normalized(self, batch: torch.Tensor, inputs: InputSpec, device: torch.device) -> torch.Tensor:
        return normalize(batch, inputs.mean, inputs.std, inputs.channels_last).to(device)

    def train_batch(
        self, index: np.ndarray, stage: ResolvedStage, generator: torch.Generator | None, device: torch.device
    ) -> tuple[Inputs, torch.Tensor]:
        inputs = self.stage_inputs(stage)
        batch = self.unit_batch(index, inputs, generator)  # (B, C, S, S) in [0, 1]
        target = torch.as_tensor(self.data.train[1][index])
        if generator is not None and self.mixer.enabled:  # mixes unit images, before normalization
            batch, target = self.mixer(batch, target, generator)
        return self.normalized(batch, inputs, device), target.to(device)

    @torch.inference_mode()
    def evaluate(
        self, model: nn.Module, rows: slice, batch_size: int, device: torch.device, autocast: Autocast
    ) -> tuple[float, float, float]:
        model.eval()
        images, labels = self.data.val[0][rows], torch.as_tensor(self.data.val[1][rows])
        correct, loss_sum = 0.0, 0.0
        for start, batch in iter_model_batches(images, batch_size, *self.inputs.preprocessing()):
            with autocast():
                logits = model(batch.to(device)).float().cpu()
            batch_correct, batch_loss = score_logits(logits, labels[start : start + batch_size])
            correct, loss_sum = correct + batch_correct, loss_sum + batch_loss
        return correct, loss_sum, float(len(images))

    @torch.inference_mode()
    def val_logits(self, model: nn.Module, batch_size: int, device: torch.device) -> torch.Tensor:
        """Logits (M, C), float32 on the CPU, of every validation image, preprocessed as `evaluate` does."""
        model.eval()
        chunks = [
            model(batch.to(device)).float().cpu()
            for _, batch in iter_model_batches(self.data.val[0], batch_size, *self.inputs.preprocessing())
        ]
        return torch.cat(chunks) if chunks else torch.zeros(0, self.num_classes)

    def eval_batch(self, batch_size: int, device: torch.device) -> Inputs:
        images = self.data.val[0][:batch_size]
        return self.normalized(
            to_unit_images(images, self.inputs.input_size, self.inputs.in_chans), self.inputs, device
        )

    def can_cache_features(self, model: nn.Module) -> bool:
        return all(hasattr(model, name) for name in ("forward_features", "forward_head", "get_classifier"))

    def extract_features(
        self,
        model: nn.Module,
        split: str,
        index: np.ndarray | None,
        stage: ResolvedStage,
        batch_size: int,
        device: torch.device,
        bf16: bool,
    ) -> torch.Tensor:
        # Training features at the stage's size; validation at the model's (what evaluation sees).
        images = self.data.train[0] if split == "train" else self.data.val[0]
        images = images if index is None else images[index]
        inputs = self.stage_inputs(stage) if split == "train" else self.inputs
        return extract_features(model, images, inputs, batch_size, device, bf16)

    def head_on_features(self, model: nn.Module) -> nn.Module:
        return _HeadOnFeatures(model)
