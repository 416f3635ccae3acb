"""The plan document: its sections and the checks that span them.

Every model forbids unknown keys, so a typo in a plan fails loudly with its key path instead of
being ignored.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from rooivalk.plan.attribution import AttributionSpec
from rooivalk.plan.base import PlanError, Strict
from rooivalk.plan.cluster import ClusterSpec, RetrainingSpec
from rooivalk.plan.data import DataSpec
from rooivalk.plan.ensemble import EnsembleSpec
from rooivalk.plan.evaluation import EvaluationSpec
from rooivalk.plan.export import ExportSpec
from rooivalk.plan.models import FusionSpec, ModelSpec, SensorSpec
from rooivalk.plan.monitoring import MonitoringSpec
from rooivalk.plan.parameter import NULLS_KEY, explicit_nulls, restore_nulls
from rooivalk.plan.requirements import RequirementSpec, requirement_problems
from rooivalk.plan.search import SearchSpec
from rooivalk.plan.tracking import TrackingSpec
from rooivalk.plan.training import TrainingSpec
from rooivalk.plan.variants import VariantsSpec


class Plan(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    data: DataSpec
    model: ModelSpec | None = Field(None, description="The one model of a single-model plan.")
    sensors: dict[str, SensorSpec] | None = Field(
        None, description="Multi-sensor plans: one model per sensor (keys are the index's sensor columns)."
    )
    fusion: FusionSpec | None = None
    ensemble: EnsembleSpec | None = Field(
        None, description="Table plans: the mlp model and an XGBoost model, weighted (rooivalk.plan.ensemble)."
    )
    variants: VariantsSpec | None = Field(
        None,
        description="Sequence, table and image classifier plans: an ensemble of the plan's variants, each member "
        "the plan with its own overrides, class probabilities averaged (rooivalk.plan.variants).",
    )
    requirements: list[RequirementSpec] = Field(
        [],
        description="The ML requirements the model must meet, each an id, a text and a measurable criterion; "
        "evaluations and model versions record each one's figure and verdict (rooivalk.plan.requirements).",
    )
    attribution: AttributionSpec | None = Field(
        None, description="Multi-sensor plans: the threat-attribution model, trained by a step of its own."
    )
    training: TrainingSpec = TrainingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    export: ExportSpec = ExportSpec()
    tracking: TrackingSpec = TrackingSpec()
    monitoring: MonitoringSpec = MonitoringSpec()
    retraining: RetrainingSpec = RetrainingSpec()
    cluster: ClusterSpec | None = Field(
        None, description="Kubernetes settings of compiled pipelines (resources, GPUs, secrets); null: KFP's defaults."
    )
    search: SearchSpec | None = Field(
        None, description="A hyperparameter search over plan keys, run by `rooivalk search` (rooivalk.plan.search)."
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
        if self.attribution is not None and self.sensors is None:
            raise ValueError("'attribution' is a step of the multi-sensor pipeline: it needs 'sensors'")
        if self.sensors is not None:
            _check_sensor_names(list(self.sensors))
        self._resolve_monitors()
        self._resolve_requirement_gates()
        if self.retraining.warm_start and (self.model is None or self.model.family != "timm"):
            # Warm start loads the champion's weights as the model's pretrained state dict, which only the
            # timm family takes whole; sensor families load their own pretrained formats (e.g. CREPE).
            raise ValueError("retraining.warm_start: single-model plans of the timm family only")
        known = self.export_model_names()
        unknown = sorted(set(self.export.models) - set(known))
        if unknown:
            raise ValueError(f"export.models: unknown model(s) {unknown}; this plan's models are {known}")
        return self

    def _resolve_requirement_gates(self) -> None:
        """A gate that names a requirement checks its criterion: its metric and bounds are filled in here
        (the gate gives none of its own, and dumps as `{requirement: ID}`: rooivalk.plan.evaluation.Gate)."""
        problems = requirement_problems(self.requirements)
        if problems:
            raise ValueError("; ".join(f"{path}: {reason}" for path, reason in problems))
        known = {requirement.id: requirement for requirement in self.requirements}
        for section, gates in (("evaluation.gates", self.evaluation.gates), ("export.gates", self.export.gates)):
            for index, gate in enumerate(gates):
                if gate.requirement is None:
                    continue
                requirement = known.get(gate.requirement)
                if requirement is None:
                    raise ValueError(
                        f"{section}[{index}].requirement: unknown requirement id {gate.requirement!r}; the plan's "
                        f"requirements: {sorted(known) or 'none'}"
                    )
                criterion = (requirement.key, requirement.min, requirement.max)
                gate.metric, gate.min, gate.max = criterion

    def export_model_names(self) -> list[str]:
        """The names export settings and reports use: `model`, or each sensor then `fusion`."""
        if self.sensors is None:
            return ["model"]
        return [*self.sensors, *(["fusion"] if self.fusion is not None else [])]

    def multisensor_parts(self) -> tuple[dict[str, SensorSpec], FusionSpec]:
        """The sensors and the fusion model of a multi-sensor plan."""
        if self.sensors is None or self.fusion is None:
            raise ValueError(f"plan {self.name!r} is not a multi-sensor plan: it needs 'sensors' and 'fusion'")
        return self.sensors, self.fusion

    def attribution_plan(self) -> Plan:
        """The attribution model as a single-model table plan (its own name and registered model), which
        the attribution step runs through ingest, train, evaluate, export and register."""
        if self.attribution is None:
            raise PlanError(f"plan {self.name!r} has no 'attribution' section")
        spec = self.attribution
        name = f"{self.name[:48]}-attribution"
        registered = f"{self.tracking.registered_model or self.name}-attribution"
        return Plan(
            name=name,
            description=f"threat attribution of {self.name}",
            data=spec.data,
            model=spec.model,
            training=spec.training,
            ensemble=spec.ensemble,
            evaluation=spec.evaluation,
            export=spec.export,
            tracking=self.tracking.model_copy(update={"registered_model": registered}),
        )

    @property
    def single_model(self) -> ModelSpec:
        """The model of a single-model plan; a multi-sensor plan has one per sensor instead."""
        if self.model is None:
            raise PlanError(f"plan {self.name!r} is a multi-sensor plan: its models are under 'sensors'")
        return self.model

    def _resolve_monitors(self) -> None:
        if self.model is not None and self.model.family == "detector":
            stopping = self.training.early_stopping
            if "monitor" not in stopping.model_fields_set:  # a detector is scored by mAP, not accuracy
                stopping.monitor = "val_map50"
        if self.search is not None and self.search.objective.metric is None:
            # A search scores trials by what the engine keeps the best epoch by, unless told otherwise; with
            # cross-validation, by the folds' mean of the held-out figure that matches it.
            monitor = self.training.early_stopping.monitor
            if self.evaluation.cross_validation is not None:
                monitor = "cv_log_loss_mean" if monitor == "val_loss" else "cv_accuracy_mean"
            self.search.objective.metric = monitor

    @model_validator(mode="before")
    @classmethod
    def _restore_nulls(cls, data: Any) -> Any:
        return restore_nulls(data)

    def to_parameter(self) -> dict[str, Any]:
        """The plan as a KFP pipeline parameter: JSON types only. KFP rejects None, so nulls are dropped,
        and the paths of those whose default is not null travel under NULLS_KEY (rooivalk.plan.parameter)."""
        parameter = self.model_dump(mode="json", exclude_none=True)
        nulls = list(explicit_nulls(self))
        return {**parameter, NULLS_KEY: nulls} if nulls else parameter

    def digest(self) -> str:
        """sha256 of the resolved plan, the plan's identity in lineage tags."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# Public attributes of a torch nn.ModuleDict instance (torch 2.x), which holds the fusion model's
# per-sensor layers: a sensor of one of these names makes torch's add_module fail with a bare KeyError.
# Written out so that checking a plan does not import torch (2 s); tests/unit/plan/test_plan.py compares it
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
