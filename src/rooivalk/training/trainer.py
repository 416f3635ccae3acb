"""`train_model`: fine-tune or train a single-model plan's model on a dataset artifact, stage by stage.

Resumes automatically from the newest verified checkpoint at `training.checkpoint.uri`, and turns
SIGTERM (what Kubernetes sends before killing a pod) into a checkpoint and a clean stop. Which code
trains depends on the plan: images (rooivalk.training.image_training), sequences and tables
(array_training), detectors (detection_training), k folds first (cross_validation).
"""

from __future__ import annotations

from rooivalk.events import MetricsFn, ProgressFn
from rooivalk.models import create_unweighted_model, layer_groups
from rooivalk.plan import ARRAY_FORMATS, DETECTION_FORMATS, Plan, is_image_plan, variant_plans
from rooivalk.training.array_training import train_array_model
from rooivalk.training.cross_validation import cross_validate
from rooivalk.training.detection_training import train_detector
from rooivalk.training.engine.stages import ResolvedStage, model_stages, plan_stages
from rooivalk.training.image_training import train_image_model
from rooivalk.training.image_variant_training import train_image_variants
from rooivalk.training.results import TrainResult
from rooivalk.training.variant_training import train_variants


def train_model(
    plan: Plan,
    dataset_dir: str,
    model_dir: str,
    progress: ProgressFn | None = None,
    log_metrics: MetricsFn | None = None,
) -> TrainResult:
    """Train per the plan's stages and write the best model (by the monitored metric) to `model_dir`.

    An image plan trains its model (rooivalk.training.image_training; with `training.distributed.nproc_per_node
    > 1` under torchrun), a sequence or table plan its rnn or mlp model (rooivalk.training.array_training),
    a detector plan its detector (rooivalk.training.detection_training); with `evaluation.cross_validation`,
    its k fold models first (rooivalk.training.cross_validation); with `variants`, each member plan's model
    (rooivalk.training.variant_training; image plans: rooivalk.training.image_variant_training).
    """
    if plan.evaluation.cross_validation is not None:  # validate allows it on sequence, table and image plans
        return cross_validate(plan, dataset_dir, model_dir, progress, log_metrics)
    if plan.data.format in ARRAY_FORMATS and plan.variants is not None:
        return train_variants(plan, dataset_dir, model_dir, progress, log_metrics)
    if plan.variants is not None and is_image_plan(plan):
        return train_image_variants(plan, dataset_dir, model_dir, progress, log_metrics)
    if plan.data.format in ARRAY_FORMATS:
        return train_array_model(plan, dataset_dir, model_dir, progress, log_metrics)
    if plan.data.format in DETECTION_FORMATS:
        return train_detector(plan, dataset_dir, model_dir, progress, log_metrics)
    return train_image_model(plan, dataset_dir, model_dir, progress, log_metrics)


def check_stages_against_model(plan: Plan) -> list[ResolvedStage]:
    """Resolve the plan's stages on its model (built without weights): an unknown group name fails
    here, at validation, with the model's groups listed, instead of minutes into a pipeline."""
    if plan.variants is not None:  # each member's own model and stages, its errors naming it
        resolved = []
        for k, member in enumerate(variant_plans(plan)):
            try:
                resolved += check_stages_against_model(member)
            except ValueError as error:
                raise ValueError(f"variants.members[{k}]: {error}") from None
        return resolved
    if plan.sensors is None:
        return plan_stages(plan, layer_groups(create_unweighted_model(plan.single_model)))
    resolved = []
    for name, sensor in plan.sensors.items():
        groups = layer_groups(create_unweighted_model(sensor.model))
        try:
            resolved += model_stages(sensor.training, sensor.model.pretrained is not None, groups)
        except ValueError as error:
            raise ValueError(f"sensors.{name}.{error}") from None
    return resolved
