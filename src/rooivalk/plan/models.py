"""The plan's models: the one model of a single-model plan, one per sensor, and the fusion model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rooivalk.plan.base import Strict
from rooivalk.plan.detection import DetectorSpec
from rooivalk.plan.training import TrainingSpec


class ModelSpec(Strict):
    family: str = Field("timm", description="Registered model family (rooivalk.models.list_families()).")
    architecture: str = Field(
        description="timm: an architecture name, e.g. tf_efficientnet_lite0; rnn: a preset (lightweight, "
        "standard, deep); mlp: hidden widths, e.g. 256-128-64; a sensor family: its variant."
    )
    num_classes: int | Literal["auto"] = "auto"
    num_features: int | Literal["auto"] = Field(
        "auto", description="rnn, mlp: inputs per frame or row; auto: from the dataset (its number of features)."
    )
    pretrained: str | None = Field(
        None,
        description="URI of pretrained weights: a timm-format state dict (timm), the family's own format (sensor "
        "families), an earlier rooivalk model.pt (rnn, mlp: tensors matching by name and shape); null: from scratch.",
    )
    input_size: int = Field(224, ge=8, le=1024, description="image models: pixels per side")
    drop_rate: float = Field(0.2, ge=0, lt=1, description="dropout; rnn: between recurrent layers and in the head")
    detector: DetectorSpec | None = Field(
        None, description="detector: input size, neck, loss weights and post-processing; null: the defaults"
    )


class SensorSpec(Strict):
    """One sensor's model of a multi-sensor plan and how it trains."""

    model: ModelSpec
    training: TrainingSpec = TrainingSpec()


class ModalityDropoutSpec(Strict):
    p: float = Field(0.2, ge=0, le=1, description="chance per training event that sensors are hidden")
    max_dropped: int = Field(2, ge=1, description="hide 1..max_dropped sensors (never the last present one)")


class FusionSpec(Strict):
    """Cross-modal transformer over the frozen sensor encoders' cached embeddings."""

    width: int = Field(64, ge=8)
    depth: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    modality_dropout: ModalityDropoutSpec = ModalityDropoutSpec()
    cache_uri: str | None = Field(None, description="Feature cache root; null: <run folder>/feature-cache.")
    training: TrainingSpec = TrainingSpec(epochs=30, lr=1e-3, batch_size=128)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> FusionSpec:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        return self
