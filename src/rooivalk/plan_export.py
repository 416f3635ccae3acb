"""Plan sections of the export step: precision candidates, quantization, per-model tolerances and budgets.

The export step builds every candidate precision of every model, scores each on the test split and
ships, per model, the fastest one whose accuracy drop against FP32 is within that model's tolerance
(rooivalk.export.selection). Tolerances and latency budgets come from the reference plan's table:
accuracy drop under 0.5 points for most models (RF 0.3, radar 0.2, fusion 0.3) and edge latency
budgets per model plus one end to end.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Precision = Literal["fp32", "fp16", "int8_static", "int8_dynamic"]
Target = Literal["onnxruntime", "tensorrt"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuantizationSpec(_Strict):
    """Static INT8 (QDQ) calibration."""

    method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax", description="How activation ranges are set from the calibration samples."
    )
    percentile: float = Field(99.999, gt=90, lt=100, description="With method percentile: the range's percentile.")
    per_channel: bool = Field(True, description="Per-output-channel weight scales (per-tensor costs depthwise convs).")
    source: Literal["train", "reference"] = Field(
        "train",
        description="Calibration samples: the training split, or the monitoring reference (the split its profile "
        "was built on; the fusion model calibrates on the profile's stored embeddings).",
    )
    samples: int = Field(512, ge=1, description="How many calibration samples (a seeded random subset).")


class ModelExportSpec(_Strict):
    """Overrides for one model: `model` (single-model plans), a sensor name, or `fusion`."""

    max_accuracy_drop: float | None = Field(
        None, ge=0, description="FP32 minus variant test accuracy allowed (fraction); null: export.max_accuracy_drop."
    )
    latency_budget_ms: float | None = Field(None, gt=0, description="Batch-1 p95 latency budget on the export device.")
    precisions: list[Precision] | None = Field(None, description="Candidates for this model; null: export.precisions.")


class TensorRTSpec(_Strict):
    precisions: list[Literal["fp16", "int8"]] = Field(
        ["fp16", "int8"], description="Engines to build: FP16 from the FP32 ONNX, INT8 from the static QDQ ONNX."
    )
    max_batch: int = Field(32, ge=1, description="Largest batch of the engine's optimization profile.")
    workspace_mb: int = Field(2048, ge=64)
