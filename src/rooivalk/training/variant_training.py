"""Training a `variants` ensemble: each member plan of a sequence or table plan trained through the engine.

Member k is the plan with its overrides (rooivalk.plan.variant_plans), trained by the usual path
(rooivalk.training.array_training.train_array_on) into `model_dir`/members/k, checkpointing under
`<training.checkpoint.uri>/member_<k>`. The root's model.json, written last, records each member's
overrides, weight, plan digest and weights digest: it marks the whole ensemble complete, and a member
left by another run is refused when loading (rooivalk.models.array_artifact.load_variant_members). The
root's model.json of an earlier run is removed first, so a crash never leaves an old root over new
members.

A rerun with checkpoint resume on (a retried pod, `rooivalk run` again) skips each member already saved
for its plan and this dataset (its model.json's plan digest and dataset version, and its
train_result.json), and resumes the one that was cut off from its checkpoints, as a detector ensemble
does (rooivalk.training.detector_ensemble).

Metrics: each member's as member_<k>_<metric> (its per-epoch figures logged under the same prefix), and
the ensemble's on the validation split (ensemble_val_accuracy, ensemble_val_log_loss), which is also the
run's best_val_accuracy: the validation accuracy of the model that ships, as for a single model.
"""

from __future__ import annotations

import logging

from rooivalk import storage
from rooivalk.data.datasets import ArrayDataset, load_array_dataset
from rooivalk.events import MetricsFn, ProgressFn
from rooivalk.models.array_artifact import ArrayModelInfo, load_array_model, read_array_model_info
from rooivalk.models.array_inference import model_arrays
from rooivalk.models.artifact import INFO_FILE
from rooivalk.plan import Plan, variant_plans
from rooivalk.training.array_probabilities import ensemble_weights, member_probabilities
from rooivalk.training.array_training import model_info, resolved_model_spec, train_array_on
from rooivalk.training.members import ensemble_metrics, ensemble_val_figures, train_variant_members
from rooivalk.training.results import TrainResult

log = logging.getLogger(__name__)


def _ensemble_val_metrics(model_dir: str, dataset: ArrayDataset, batch_size: int) -> dict[str, float]:
    """The weighted average of the members' probabilities on the validation split: accuracy, log loss."""
    model, info = load_array_model(model_dir)
    weights = ensemble_weights(info)
    assert weights is not None, "a variant ensemble has its members' weights"
    arrays, labels = model_arrays(info, dataset, "val")
    if len(labels) == 0:
        return {}
    return ensemble_val_figures(member_probabilities(model, info, model_dir, arrays, batch_size), weights, labels)


def train_variants(
    plan: Plan,
    dataset_dir: str,
    model_dir: str,
    progress: ProgressFn | None = None,
    log_metrics: MetricsFn | None = None,
) -> TrainResult:
    """Train every member of the plan's `variants` (see the module docstring); write the root last."""
    assert plan.variants is not None
    dataset = load_array_dataset(dataset_dir)
    members = variant_plans(plan)
    for member in members:
        if member.training.distributed.processes > 1:
            raise ValueError("training.distributed: sequence and table models train in one process")
    if storage.exists(f"{model_dir}/{INFO_FILE}"):
        storage.delete(f"{model_dir}/{INFO_FILE}")  # complete again only when every member is saved

    def train_member(
        member: Plan, folder: str, events: ProgressFn | None, epochs: MetricsFn | None, checkpoint: str | None
    ) -> TrainResult:
        return train_array_on(member, dataset, folder, events, epochs, checkpoint)

    trained = train_variant_members(
        plan, members, model_dir, dataset.info.version_id, train_member, read_array_model_info, progress, log_metrics
    )
    root = model_info(plan, resolved_model_spec(plan.single_model, dataset), dataset)
    root.variants = trained.records
    artifacts = trained.artifacts | {INFO_FILE: _write_root(model_dir, root)}
    ensemble = _ensemble_val_metrics(model_dir, dataset, plan.training.eval_batch_size)
    metrics = ensemble_metrics(trained, ensemble, plan.variants.normalized_weights())
    count = len(members)
    metrics |= {
        "parameters": sum(metrics.get(f"member_{k}_parameters", 0.0) for k in range(count)),
        "num_features": metrics["member_0_num_features"],
    }
    return TrainResult(metrics, trained.stages, artifacts)


def _write_root(model_dir: str, info: ArrayModelInfo) -> str:
    """The root's model.json (no weights of its own: the members'); its sha256."""
    return storage.write_text(f"{model_dir}/{INFO_FILE}", info.model_dump_json(indent=2))
