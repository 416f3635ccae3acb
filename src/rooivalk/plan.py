"""The training plan: a YAML document validated by pydantic.

Every model forbids unknown keys, so a typo in a plan fails loudly with its key path instead of
being ignored. `load_plan` adds the file name to every error, and `apply_overrides` implements the
CLI's `--set a.b=c`.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rooivalk.plan_cluster import ClusterSpec, RetrainingSpec
from rooivalk.plan_data import DataFormat
from rooivalk.plan_export import ModelExportSpec, Precision, QuantizationSpec, Target, TensorRTSpec
from rooivalk.plan_monitoring import MonitoringSpec, WebhookSpec
from rooivalk.plan_parameter import NULLS_KEY, explicit_nulls, restore_nulls
from rooivalk.plan_techniques import PluginResolver, technique_problems
from rooivalk.plan_training import (
    AugmentSpec,
    CheckpointSpec,
    DistributedSpec,
    EarlyStoppingSpec,
    EMASpec,
    LossSpec,
    MixSpec,
    OptimizerSpec,
    SchedulerSpec,
    StageLR,
    StageSpec,
    TrainingSpec,
)

__all__ = [
    "AugmentSpec",
    "CheckpointSpec",
    "ClusterSpec",
    "DataSpec",
    "DistributedSpec",
    "EMASpec",
    "EarlyStoppingSpec",
    "EvaluationSpec",
    "FusionSpec",
    "ModalityDropoutSpec",
    "SensorSpec",
    "SimulationSpec",
    "ExportSpec",
    "Gate",
    "ModelExportSpec",
    "QuantizationSpec",
    "TensorRTSpec",
    "LossSpec",
    "MixSpec",
    "ModelSpec",
    "MonitoringSpec",
    "OptimizerSpec",
    "Plan",
    "PlanError",
    "RetrainingSpec",
    "SchedulerSpec",
    "SplitSpec",
    "StageLR",
    "StageSpec",
    "TrackingSpec",
    "TrainingSpec",
    "WebhookSpec",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitSpec(_Strict):
    """How samples are divided. Fractions are of the whole dataset; the split is stratified by label."""

    train: float = Field(0.70, gt=0, lt=1)
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, ge=0, lt=1)
    seed: int = 0
    stratified: bool = True
    # Formats that ship an official test set (idx: Fashion-MNIST's t10k files) use it as the test
    # split; train and val then divide the rest in the ratio train:val.
    use_source_test: bool = True

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitSpec:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions train+val+test must sum to 1, got {total:.4f}")
        return self


class SimulationSpec(_Strict):
    """rooivalk.data.simulators.counter_drone settings: deterministic by seed, scales by count."""

    count: int = Field(4000, ge=5)
    seed: int = 0
    image_size: int = Field(32, ge=16, le=256)
    optical_field_px: int = Field(
        128,
        ge=8,
        le=1024,
        description="camera-frame pixels an optical chip shows: 128 (the default) is the whole frame "
        "scaled to image_size; image_size is a crop around the target at the camera's resolution",
    )


class DataSpec(_Strict):
    source: str = Field(description="Local path or s3:// URI of the raw data.")
    format: DataFormat = Field(
        description="The reader: image_folder: one sub-folder per class with PNG/JPEG files; "
        "idx: MNIST-style IDX files (train-*/t10k-* images and labels, optionally .gz); "
        "multisensor: events.parquet linking each event's samples (rooivalk.data.ingest_multisensor); "
        "or the name of an installed reader plugin (entry-point group rooivalk.readers; `rooivalk families`)."
    )
    simulate: SimulationSpec | None = Field(
        None, description="Generate the source with the counter-drone simulator when it does not exist yet."
    )
    split: SplitSpec = SplitSpec()
    # Images of different sizes are resized to this square size at ingestion; uniform folders keep
    # their native size (the model input size is resized per batch during training).
    image_size: int = Field(64, ge=8, le=1024)
    channels: Literal["auto", 1, 3] = "auto"
    max_samples_per_class: int | None = Field(None, ge=1)


class ModelSpec(_Strict):
    family: str = Field("timm", description="Registered model family (rooivalk.models.list_families()).")
    architecture: str = Field(description="timm architecture name, e.g. tf_efficientnet_lite0.")
    num_classes: int | Literal["auto"] = "auto"
    pretrained: str | None = Field(None, description="URI of a timm-format state dict, or null.")
    input_size: int = Field(224, ge=8, le=1024)
    drop_rate: float = Field(0.2, ge=0, lt=1)


class SensorSpec(_Strict):
    """One sensor's model of a multi-sensor plan and how it trains."""

    model: ModelSpec
    training: TrainingSpec = TrainingSpec()


class ModalityDropoutSpec(_Strict):
    p: float = Field(0.2, ge=0, le=1, description="chance per training event that sensors are hidden")
    max_dropped: int = Field(2, ge=1, description="hide 1..max_dropped sensors (never the last present one)")


class FusionSpec(_Strict):
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


class Gate(_Strict):
    metric: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _has_bound(self) -> Gate:
        if self.min is None and self.max is None:
            raise ValueError(f"gate on {self.metric!r} needs 'min' or 'max'")
        return self


class EvaluationSpec(_Strict):
    gates: list[Gate] = []
    fail_on_gate: bool = Field(True, description="Fail the pipeline when a gate fails.")


class ExportSpec(_Strict):
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
    temperature_scaling: bool = Field(True, description="Fit a softmax temperature on the validation split.")
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


class PromotionSpec(_Strict):
    """When a new model version (alias `challenger`) takes the alias `champion`."""

    metric: str | None = Field(
        None, description="Test metric to compare; null: test_accuracy (one model) or fusion_test_accuracy (fusion)."
    )
    mode: Literal["max", "min"] = "max"
    margin: float = Field(0.0, ge=0, description="The challenger must beat the champion by more than this.")


class TrackingSpec(_Strict):
    uri: str | None = Field(
        None, description="MLflow tracking URI: a server URL (http://...) or null: sqlite in the run folder."
    )
    experiment: str = "rooivalk"
    registered_model: str | None = Field(None, description="Registry name; null: the plan name.")
    promotion: PromotionSpec = PromotionSpec()
    buffer_uri: str | None = Field(
        None,
        description="Where tracking records go while the server is unreachable (any storage URI; "
        "`rooivalk sync` replays them); null: <run folder>/tracking-buffer for `rooivalk run`.",
    )


class Plan(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    data: DataSpec
    model: ModelSpec | None = Field(None, description="The one model of a single-model plan.")
    sensors: dict[str, SensorSpec] | None = Field(
        None, description="Multi-sensor plans: one model per sensor (keys are the index's sensor columns)."
    )
    fusion: FusionSpec | None = None
    training: TrainingSpec = TrainingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    export: ExportSpec = ExportSpec()
    tracking: TrackingSpec = TrackingSpec()
    monitoring: MonitoringSpec = MonitoringSpec()
    retraining: RetrainingSpec = RetrainingSpec()
    cluster: ClusterSpec | None = Field(
        None, description="Kubernetes settings of compiled pipelines (resources, GPUs, secrets); null: KFP's defaults."
    )
    pipeline_root: str | None = Field(
        None,
        description="KFP pipeline root of cluster runs (e.g. s3://bucket/pipelines), written into the compiled "
        "pipeline; null: the KFP deployment's default. `rooivalk run` keeps artifacts in the run folder.",
    )

    @field_validator("name")
    @classmethod
    def _short_name(cls, value: str) -> str:
        if len(value) > 60:
            raise ValueError("plan name must be at most 60 characters")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Plan:
        if (self.model is None) == (self.sensors is None):
            raise ValueError("give either 'model' (a single-model plan) or 'sensors' (a multi-sensor plan)")
        if self.sensors is not None and self.data.format != "multisensor":
            raise ValueError("'sensors' needs data.format: multisensor")
        if self.fusion is not None and self.sensors is None:
            raise ValueError("'fusion' needs 'sensors'")
        if self.sensors is not None:
            _check_sensor_names(list(self.sensors))
        if self.retraining.warm_start and (self.model is None or self.model.family != "timm"):
            # Warm start loads the champion's weights as the model's pretrained state dict, which only the
            # timm family takes whole; sensor families load their own pretrained formats (e.g. CREPE).
            raise ValueError("retraining.warm_start: single-model plans of the timm family only")
        known = self.export_model_names()
        unknown = sorted(set(self.export.models) - set(known))
        if unknown:
            raise ValueError(f"export.models: unknown model(s) {unknown}; this plan's models are {known}")
        return self

    def export_model_names(self) -> list[str]:
        """The names export settings and reports use: `model`, or each sensor then `fusion`."""
        if self.sensors is None:
            return ["model"]
        return [*self.sensors, *(["fusion"] if self.fusion is not None else [])]

    @property
    def single_model(self) -> ModelSpec:
        """The model of a single-model plan; a multi-sensor plan has one per sensor instead."""
        if self.model is None:
            raise PlanError(f"plan {self.name!r} is a multi-sensor plan: its models are under 'sensors'")
        return self.model

    @model_validator(mode="before")
    @classmethod
    def _restore_nulls(cls, data: Any) -> Any:
        return restore_nulls(data)

    def to_parameter(self) -> dict[str, Any]:
        """The plan as a KFP pipeline parameter: JSON types only. KFP rejects None, so nulls are dropped,
        and the paths of those whose default is not null travel under NULLS_KEY (rooivalk.plan_parameter)."""
        parameter = self.model_dump(mode="json", exclude_none=True)
        nulls = list(explicit_nulls(self))
        return {**parameter, NULLS_KEY: nulls} if nulls else parameter

    def digest(self) -> str:
        """sha256 of the resolved plan, the plan's identity in lineage tags."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# Public attributes of a torch nn.ModuleDict instance (torch 2.x), which holds the fusion model's
# per-sensor layers: a sensor of one of these names makes torch's add_module fail with a bare KeyError.
# Written out so that checking a plan does not import torch (2 s); tests/unit/test_plan.py compares it
# with the installed torch.
# fmt: off
MODULE_DICT_ATTRIBUTES = frozenset({
    "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children", "clear", "compile", "cpu", "cuda",
    "double", "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer", "get_extra_state",
    "get_parameter", "get_submodule", "half", "ipu", "items", "keys", "load_state_dict", "modules", "mtia",
    "named_buffers", "named_children", "named_modules", "named_parameters", "parameters", "pop",
    "register_backward_hook", "register_buffer", "register_forward_hook", "register_forward_pre_hook",
    "register_full_backward_hook", "register_full_backward_pre_hook", "register_load_state_dict_post_hook",
    "register_load_state_dict_pre_hook", "register_module", "register_parameter", "register_state_dict_post_hook",
    "register_state_dict_pre_hook", "requires_grad_", "set_extra_state", "set_submodule", "share_memory",
    "state_dict", "to", "to_empty", "train", "training", "type", "update", "values", "xpu", "zero_grad"
})
# fmt: on


def _check_sensor_names(names: list[str]) -> None:
    """Sensor names key the fusion model's per-sensor modules, so a name must be a lowercase
    identifier that is not one of MODULE_DICT_ATTRIBUTES: torch would fail deep inside model building."""
    for name in names:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"sensors.{name}: a sensor name must be lowercase letters, digits and '_', letter first")
        if name in MODULE_DICT_ATTRIBUTES:
            raise ValueError(
                f"sensors.{name}: this name is reserved (an attribute of torch's nn.ModuleDict, which holds the "
                f"fusion model's per-sensor layers); rename the sensor column, e.g. to {name}_sensor"
            )


class PlanError(ValueError):
    """A plan that cannot be read or does not validate; the message names the file and key path."""


def _format_errors(error: ValidationError, origin: str) -> str:
    problems = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "<root>"
        problems.append((path, "unknown key" if item["type"] == "extra_forbidden" else item["msg"]))
    return _format_problems(problems, origin)


def _format_problems(problems: list[tuple[str, str]], origin: str) -> str:
    return "\n".join([f"{origin}: {len(problems)} problem(s) in the plan", *(f"  {p}: {m}" for p, m in problems)])


def validate_plan(raw: dict[str, Any], origin: str = "<plan>", resolver: PluginResolver | None = None) -> Plan:
    """Validate a raw plan, then refuse every training key its model would not use (plan_techniques)."""
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as error:
        raise PlanError(_format_errors(error, origin)) from None
    problems = technique_problems(plan, resolver)
    if problems:
        raise PlanError(_format_problems(problems, origin))
    return plan


def _parse_scalar(text: str) -> Any:
    # YAML scalars: 1e-3 -> float, true -> bool, null -> None, [a, b] -> list.
    return yaml.safe_load(text) if text.strip() else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides to a raw plan dict (a new dict; values parsed as YAML)."""
    result: dict[str, Any] = json.loads(json.dumps(raw))
    for override in overrides:
        if "=" not in override:
            raise PlanError(f"--set {override!r}: expected key.path=value")
        path, _, value = override.partition("=")
        keys = path.strip().split(".")
        node = result
        for key in keys[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise PlanError(f"--set {path}: {key!r} is not a mapping")
            node = child
        node[keys[-1]] = _parse_scalar(value)
    return result


def read_plan_file(path: str | Path) -> dict[str, Any]:
    plan_path = Path(path)
    if not plan_path.is_file():
        raise PlanError(f"{plan_path}: plan file not found")
    try:
        raw = yaml.safe_load(plan_path.read_text())
    except yaml.YAMLError as error:
        raise PlanError(f"{plan_path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise PlanError(f"{plan_path}: a plan must be a YAML mapping at the top level")
    return raw


def load_plan(path: str | Path, overrides: list[str] | None = None, resolver: PluginResolver | None = None) -> Plan:
    """Read, override and validate a plan file; errors name the file and the key path."""
    raw = apply_overrides(read_plan_file(path), overrides or [])
    return validate_plan(raw, origin=str(path), resolver=resolver)


def plan_json_schema() -> dict[str, Any]:
    return Plan.model_json_schema()
