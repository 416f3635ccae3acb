"""The `detection` task: a detector (rooivalk.models.detector) on a detection dataset's images and boxes.

What the engine sees: one training sample per image; its "label" (for stratified or balanced batch
sampling) is the image's rarest class, negatives (no box) a stratum of their own, as the dataset's
split draws them. A batch is letterboxed images (B, 3, H, W) float in [0, 1] at the input size, or at a
random size per batch in multi-scale training, after box-aware augmentation; its target packs each
image's boxes as (B, K, 5) rows of (class, x1, y1, x2, y2) in the batch's pixels, class -1 padding
(K: the most boxes of an image in the batch). The loss is FCOS's own, weighted by
model.detector.loss_weights. Validation scores mAP@0.5 (the engine's score, `val_map50`) with
mAP@0.5:0.95 and precision, recall and F1 at the operating threshold, on the original images' pixels.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from rooivalk.data.detection_dataset import DetectionDataset
from rooivalk.models.detection_metrics import GroundTruth, detection_metrics
from rooivalk.models.detector_inference import ImageCache, detect_images, letterboxed_batch
from rooivalk.models.letterbox import letterbox
from rooivalk.training.engine.stages import ResolvedStage
from rooivalk.training.tasks.base import Autocast, Inputs, Task
from rooivalk.training.tasks.detection_augment import DetectionAugment, DetectionSample, random_train_size

PADDING_CLASS = -1.0


def image_strata(dataset: DetectionDataset) -> np.ndarray:
    """Each image's rarest class over the whole split (fewest images holding it), num_classes for a negative."""
    classes = dataset.num_classes
    images_per_class = np.zeros(classes, dtype=np.int64)
    pairs = np.unique(np.stack([dataset.box_images, dataset.box_labels], 1), axis=0) if len(dataset.boxes) else None
    if pairs is not None:
        np.add.at(images_per_class, pairs[:, 1], 1)
    strata = np.full(len(dataset), classes, dtype=np.int64)
    if pairs is not None:
        rarity = images_per_class[pairs[:, 1]] * (classes + 1) + pairs[:, 1]  # fewest images first, ties: lower class
        order = np.lexsort((rarity, pairs[:, 0]))
        first = np.unique(pairs[order, 0], return_index=True)[1]
        strata[pairs[order[first], 0]] = pairs[order[first], 1]
    return strata


def image_repeats(dataset: DetectionDataset, oversample: dict[str, int]) -> np.ndarray:
    """Per image (N,): the highest training.oversample factor of the classes it holds (1 for the rest)."""
    classes = list(dataset.info.classes)
    unknown = sorted(set(oversample) - set(classes))
    if unknown:
        raise ValueError(f"training.oversample: {unknown} not among the dataset's classes {classes}")
    repeats = np.ones(len(dataset), dtype=np.int64)
    for name, factor in oversample.items():
        holding = np.unique(dataset.box_images[dataset.box_labels == classes.index(name)])
        repeats[holding] = np.maximum(repeats[holding], factor)
    return repeats


def pack_targets(samples: list[DetectionSample]) -> torch.Tensor:
    """(B, K, 5) float32 rows of (class, x1, y1, x2, y2), class -1 padding; K >= 1."""
    most = max([1, *(len(labels) for _, _, labels in samples)])
    packed = torch.full((len(samples), most, 5), PADDING_CLASS)
    for row, (_, boxes, labels) in enumerate(samples):
        packed[row, : len(labels), 0] = labels.float()
        packed[row, : len(labels), 1:] = boxes
    return packed


def unpack_targets(packed: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """torchvision's targets: per image {"boxes" (n, 4) float, "labels" (n,) int64}."""
    targets = []
    for rows in packed:
        kept = rows[rows[:, 0] != PADDING_CLASS]
        targets.append({"boxes": kept[:, 1:].float(), "labels": kept[:, 0].long()})
    return targets


class DetectionTraining(Task):
    name: ClassVar[str] = "detection"
    score_name: ClassVar[str] = "val_map50"
    has_val_loss: ClassVar[bool] = False  # FCOS computes losses in training mode only

    def __init__(
        self,
        train: DetectionDataset,
        val: DetectionDataset,
        input_size: tuple[int, int],
        operating_threshold: float,
        augment: DetectionAugment | None = None,
        multi_scale: tuple[float, float] | None = None,
        oversample: dict[str, int] | None = None,
    ) -> None:
        if len(val) == 0:
            raise ValueError("the detection dataset's val split is empty: mAP needs validation images")
        self.train, self.val = train, val
        self.classes = list(train.info.classes)
        self.num_classes = len(self.classes)
        self.input_size = input_size  # (height, width)
        self.operating_threshold = operating_threshold
        self.augment = augment
        self.multi_scale = multi_scale
        self.cache = ImageCache()
        # The engine's training samples: image rows, an oversampled image repeated (its factor times).
        self.train_rows = np.repeat(np.arange(len(train)), image_repeats(train, oversample or {}))
        self._train_strata = image_strata(train)[self.train_rows]
        self._val_strata = image_strata(val)
        self._last_metrics: dict[str, float] = {}
        self._stage_augments: dict[float, DetectionAugment] = {}

    @property
    def train_labels(self) -> np.ndarray:
        return self._train_strata

    @property
    def val_labels(self) -> np.ndarray:
        return self._val_strata

    def sample(self, dataset: DetectionDataset, index: int) -> DetectionSample:
        boxes, labels = dataset.boxes_of(index)
        image = self.cache.get(dataset.image_uris[index])
        return image, torch.from_numpy(boxes.copy()), torch.from_numpy(labels.copy())

    def train_batch(
        self, index: np.ndarray, stage: ResolvedStage, generator: torch.Generator | None, device: torch.device
    ) -> tuple[Inputs, torch.Tensor]:
        size = self.input_size
        if self.multi_scale is not None and generator is not None:
            size = random_train_size(self.input_size, self.multi_scale, generator=generator)
        samples = []
        augment = self.augment
        if augment is not None and stage.augment_strength is not None:
            augment = self.stage_augment(stage.augment_strength)
        for row in self.train_rows[index].tolist():
            if augment is not None and generator is not None:
                samples.append(augment.sample(lambda i: self.sample(self.train, i), row, len(self.train), size))
            else:
                image, boxes, labels = self.sample(self.train, row)
                boxed, placement = letterbox(image, size)
                samples.append((boxed, placement.boxes_to_letterbox(boxes), labels))
        images = torch.stack([image for image, _, _ in samples]).float().div_(255)  # (B, 3, h, w)
        return images.to(device), pack_targets(samples).to(device)

    def stage_augment(self, strength: float) -> DetectionAugment:
        """training.detection_augment at a stage's own strength (built once per strength)."""
        assert self.augment is not None
        if strength not in self._stage_augments:
            settings = dataclasses.replace(self.augment.requested, strength=strength)
            self._stage_augments[strength] = DetectionAugment(settings)
        return self._stage_augments[strength]

    def training_loss(
        self, model: nn.Module, inputs: Inputs, target: torch.Tensor, criterion: nn.Module
    ) -> torch.Tensor:
        losses = model(inputs, unpack_targets(target))
        detector = model.module if hasattr(model, "module") else model
        return detector.weighted_loss(losses)  # type: ignore[no-any-return,operator,union-attr]

    def forward(self, model: nn.Module, inputs: Inputs) -> Any:
        """Eval mode: detections per image. Training mode without targets (BatchNorm re-estimation) runs
        the backbone alone: the only BatchNorm layers are its own (FCOS's towers use GroupNorm)."""
        if model.training:  # normalized as the detector normalizes: statistics of what the backbone sees
            return model.backbone_features(inputs)  # type: ignore[operator]
        return model(inputs)

    def evaluate(
        self, model: nn.Module, rows: slice, batch_size: int, device: torch.device, autocast: Autocast
    ) -> tuple[float, float, float]:
        chosen = list(range(len(self.val)))[rows]
        uris = [self.val.image_uris[row] for row in chosen]
        predictions = detect_images(
            model, lambda i: self.cache.get(uris[i]), len(uris), self.input_size, batch_size, device, autocast
        )
        truths = [GroundTruth(*self.val.boxes_of(row)) for row in chosen]
        metrics = detection_metrics(predictions, truths, self.classes, self.operating_threshold)
        self._last_metrics = {f"val_{key}": value for key, value in metrics.items() if "/" not in key}
        self._last_metrics.pop(self.score_name, None)  # the engine logs the score itself
        return metrics["map50"] * len(chosen), float("nan"), float(len(chosen))

    def validation_metrics(self) -> dict[str, float]:
        return dict(self._last_metrics)

    def eval_batch(self, batch_size: int, device: torch.device) -> Inputs:
        count = min(batch_size, len(self.val))
        images, _ = letterboxed_batch([self.cache.get(uri) for uri in self.val.image_uris[:count]], self.input_size)
        return images.to(device)
