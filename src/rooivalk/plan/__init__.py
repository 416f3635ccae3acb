"""The training plan: a YAML document validated by pydantic, one module per section.

Import every plan name from here (`from rooivalk.plan import Plan, TrainingSpec`); the section modules
are an implementation detail. Checking a plan imports neither torch nor kfp.
"""

from rooivalk.plan.attribution import AttributionSpec
from rooivalk.plan.base import PlanError, Strict
from rooivalk.plan.cluster import RETRYABLE_KINDS, STEP_KINDS, ClusterSpec, RetrainingSpec, StepKind, StepResources
from rooivalk.plan.data import (
    ARRAY_FORMATS,
    BUILTIN_DATA_FORMATS,
    DETECTION_FORMATS,
    DataFormat,
    DataSpec,
    SequenceSpec,
    SimulationSpec,
    SplitSpec,
    known_data_formats,
)
from rooivalk.plan.detection import DetectionAugmentSpec, DetectorEnsembleSpec, DetectorSpec, LossWeightsSpec
from rooivalk.plan.document import MODULE_DICT_ATTRIBUTES, Plan
from rooivalk.plan.ensemble import ENSEMBLE_MEMBERS, EnsembleSpec, XGBoostSpec
from rooivalk.plan.evaluation import CrossValidationSpec, DetectionTTASpec, EvaluationSpec, Gate
from rooivalk.plan.export import ExportSpec, ModelExportSpec, Precision, QuantizationSpec, Target, TensorRTSpec
from rooivalk.plan.loading import (
    apply_overrides,
    detector_member_plan,
    load_plan,
    plan_json_schema,
    read_plan_file,
    validate_plan,
    variant_plans,
)
from rooivalk.plan.models import FusionSpec, ModalityDropoutSpec, ModelSpec, SensorSpec
from rooivalk.plan.monitoring import MonitoringSpec, WebhookSpec
from rooivalk.plan.parameter import NULLS_KEY
from rooivalk.plan.requirements import RequirementSpec
from rooivalk.plan.search import ObjectiveSpec, ParameterSpec, PrunerSpec, SearchSpec
from rooivalk.plan.techniques import PluginResolver
from rooivalk.plan.tracking import PromotionSpec, TrackingSpec
from rooivalk.plan.training import (
    AugmentSpec,
    AutoScheduleSpec,
    CheckpointSpec,
    DistillationSpec,
    DistributedSpec,
    EarlyStoppingSpec,
    EMASpec,
    LossSpec,
    MixSpec,
    OptimizerSpec,
    PruningSpec,
    QATSpec,
    SchedulerSpec,
    SequenceAugmentSpec,
    StageLR,
    StageSpec,
    TrainingSpec,
)
from rooivalk.plan.variants import VariantsSpec, is_image_plan

__all__ = [
    "ARRAY_FORMATS",
    "BUILTIN_DATA_FORMATS",
    "DETECTION_FORMATS",
    "CrossValidationSpec",
    "DetectionTTASpec",
    "DetectionAugmentSpec",
    "DetectorEnsembleSpec",
    "DetectorSpec",
    "LossWeightsSpec",
    "ENSEMBLE_MEMBERS",
    "MODULE_DICT_ATTRIBUTES",
    "NULLS_KEY",
    "RETRYABLE_KINDS",
    "STEP_KINDS",
    "AttributionSpec",
    "AugmentSpec",
    "AutoScheduleSpec",
    "CheckpointSpec",
    "ClusterSpec",
    "DataFormat",
    "DataSpec",
    "DistillationSpec",
    "DistributedSpec",
    "EMASpec",
    "EarlyStoppingSpec",
    "EnsembleSpec",
    "EvaluationSpec",
    "ExportSpec",
    "FusionSpec",
    "Gate",
    "LossSpec",
    "MixSpec",
    "ModalityDropoutSpec",
    "ModelExportSpec",
    "ModelSpec",
    "MonitoringSpec",
    "OptimizerSpec",
    "ObjectiveSpec",
    "ParameterSpec",
    "Plan",
    "PrunerSpec",
    "PlanError",
    "PluginResolver",
    "Precision",
    "PromotionSpec",
    "PruningSpec",
    "QATSpec",
    "QuantizationSpec",
    "RequirementSpec",
    "RetrainingSpec",
    "SchedulerSpec",
    "SensorSpec",
    "SequenceAugmentSpec",
    "SearchSpec",
    "SequenceSpec",
    "SimulationSpec",
    "SplitSpec",
    "StageLR",
    "StageSpec",
    "StepKind",
    "StepResources",
    "Strict",
    "Target",
    "TensorRTSpec",
    "TrackingSpec",
    "TrainingSpec",
    "VariantsSpec",
    "is_image_plan",
    "WebhookSpec",
    "XGBoostSpec",
    "apply_overrides",
    "detector_member_plan",
    "known_data_formats",
    "load_plan",
    "plan_json_schema",
    "read_plan_file",
    "validate_plan",
    "variant_plans",
]
