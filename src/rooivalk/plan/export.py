"""Plan sections of the export step: precision candidates, quantization, per-model tolerances and budgets.

The export step builds every candidate precision of every model, scores each on the test split and
ships, per model, the fastest one whose accuracy drop against FP32 is within that model's tolerance
(rooivalk.export.selection). Tolerances and latency budgets come from the reference plan's table:
accuracy drop under 0.5 points for most models (RF 0.3, radar 0.2, fusion 0.3) and edge latency
budgets per model plus one end to end.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rooivalk.plan.base import Strict
from rooivalk.plan.evaluation import Gate

Precision = Literal["fp32", "fp16", "int8_static", "int8_dynamic"]
Target = Literal["onnxruntime", "tensorrt"]


class QuantizationSpec(Strict):
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
    operators: Literal["auto", "all", "weighted"] = Field(
        "auto",
        description="Which ONNX nodes run in INT8. all: every op type ONNX Runtime can quantize (sums, products, "
        "concatenations and activations too: fastest where convolutions then chain in INT8); weighted: only "
        "Conv, MatMul and Gemm nodes with a weight (what training.qat simulates; the rest stays float); auto: "
        "weighted for a model trained with training.qat, all otherwise.",
    )


class ModelExportSpec(Strict):
    """Overrides for one model: `model` (single-model plans), a sensor name, or `fusion`."""

    max_accuracy_drop: float | None = Field(
        None, ge=0, description="FP32 minus variant test accuracy allowed (fraction); null: export.max_accuracy_drop."
    )
    latency_budget_ms: float | None = Field(None, gt=0, description="Batch-1 p95 latency budget on the export device.")
    precisions: list[Precision] | None = Field(None, description="Candidates for this model; null: export.precisions.")


class TensorRTSpec(Strict):
    precisions: list[Literal["fp16", "int8"]] = Field(
        ["fp16", "int8"], description="Engines to build: FP16 from the FP32 ONNX, INT8 from the static QDQ ONNX."
    )
    max_batch: int = Field(32, ge=1, description="Largest batch of the engine's optimization profile.")
    workspace_mb: int = Field(2048, ge=64)


class ExportSpec(Strict):
    """The export step (rooivalk.export): candidates, gates per model, budgets, targets."""

    precisions: list[Precision] = Field(
        ["fp32", "fp16", "int8_static", "int8_dynamic"],
        description="Candidate precisions; FP32 is always built (it is the verified source) and always passes.",
    )
    targets: list[Target] = Field(
        ["onnxruntime"], description="Runtimes to ship for: onnxruntime always; tensorrt builds engines on a GPU node."
    )
    quantization: QuantizationSpec = QuantizationSpec()
    max_accuracy_drop: float = Field(
        0.005, ge=0, description="Default per-model tolerance: FP32 test accuracy minus the variant's (fraction)."
    )
    models: dict[str, ModelExportSpec] = Field(
        {}, description="Per-model overrides keyed by `model`, a sensor name or `fusion`."
    )
    end_to_end_budget_ms: float | None = Field(
        None, gt=0, description="Batch-1 p95 budget of the whole system (every encoder, then fusion)."
    )
    temperature_scaling: bool | None = Field(
        None,
        description="Fit a softmax temperature on the validation split; null: yes for classifiers, no for detectors. "
        "true for a detector: one temperature per class on its scores, fitted so a score reads as the precision "
        "of detections at that score (the bundle applies them after NMS; mAP does not move).",
    )
    temperature_images: int = Field(
        1000,
        ge=1,
        description="Detectors: validation images (a seeded subset) the per-class temperatures are fitted on.",
    )
    tensorrt: TensorRTSpec = TensorRTSpec()
    latency_runs: int = Field(100, ge=100, description="Timed batch-1 runs per model (after the warm-up).")
    latency_warmup: int = Field(10, ge=1)
    max_abs_diff: float = Field(1e-3, gt=0, description="ONNX vs PyTorch tolerance on logits.")
    gates: list[Gate] = Field([], description="Gates on the export report's metrics (e.g. system_accuracy_drop).")
    fail_on_gate: bool = Field(True, description="Fail the pipeline when an export gate or a latency budget fails.")

    @model_validator(mode="after")
    def _fp32_is_a_candidate(self) -> ExportSpec:
        for where, precisions in [("export.precisions", self.precisions)] + [
            (f"export.models.{name}.precisions", spec.precisions) for name, spec in self.models.items()
        ]:
            if precisions is not None and "fp32" not in precisions:
                raise ValueError(f"{where}: must include fp32 (the verified source every variant is measured against)")
        return self

    def for_model(self, name: str) -> ModelExportSpec:
        """The model's settings with the plan-wide defaults filled in."""
        spec = self.models.get(name, ModelExportSpec())
        return ModelExportSpec(
            max_accuracy_drop=self.max_accuracy_drop if spec.max_accuracy_drop is None else spec.max_accuracy_drop,
            latency_budget_ms=spec.latency_budget_ms,
            precisions=list(spec.precisions or self.precisions),
        )
