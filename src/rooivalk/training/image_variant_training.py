"""Training a `variants` ensemble of an image classifier plan: each member plan trained through the engine.

Member k is the plan with its overrides (rooivalk.plan.variant_plans: seeds, augmentation strengths,
learning rates, epochs; never the architecture or the image input, which the ensemble's one graph shares),
trained in this process by the usual path (rooivalk.training.image_training.train_image_on) into
`model_dir`/members/k, checkpointing under `<training.checkpoint.uri>/member_<k>`. The root's model.json
(rooivalk.models.artifact.ModelInfo with `variants`), written last, records each member's overrides,
weight, plan digest and weights digest; the root's model.json of an earlier run is removed first, so a
crash never leaves an old root over new members. A rerun with checkpoint resume on skips each member
already saved for its plan and this dataset (rooivalk.training.members), as the sequence and table path
does (rooivalk.training.variant_training).

Metrics: each member's as member_<k>_<metric> (per-epoch figures under the same prefix), and the
ensemble's on the validation split (ensemble_val_accuracy, ensemble_val_log_loss: the members' softmax
probabilities weighted and averaged), which is also the run's best_val_accuracy.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from rooivalk import storage
from rooivalk.data.dataset import Dataset, load_dataset
from rooivalk.data.transforms import iter_model_batches
from rooivalk.events import MetricsFn, ProgressFn
from rooivalk.models.artifact import (
    INFO_FILE,
    ModelInfo,
    load_image_members,
    read_model_info,
    variant_member_path,
)
from rooivalk.plan import Plan, variant_plans
from rooivalk.training.image_training import train_image_on
from rooivalk.training.members import ensemble_metrics, ensemble_val_figures, train_variant_members
from rooivalk.training.results import TrainResult

log = logging.getLogger(__name__)


@torch.inference_mode()
def _probabilities(model: torch.nn.Module, info: ModelInfo, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Softmax probabilities (N, K) of uint8 images (N, H, W, C), preprocessed as evaluation does."""
    preprocessing = (info.input_size, info.mean, info.std, info.in_chans)
    chunks = [
        model(batch).float().softmax(1).numpy() for _, batch in iter_model_batches(images, batch_size, *preprocessing)
    ]
    return np.concatenate(chunks).astype(np.float64)


def _ensemble_val_metrics(model_dir: str, dataset: Dataset, batch_size: int) -> dict[str, float]:
    """The weighted average of the members' probabilities on the validation split: accuracy, log loss."""
    info = read_model_info(model_dir)
    assert info.variants is not None
    images, labels = dataset.subset("val")
    if len(labels) == 0:
        return {}
    probabilities = {
        str(k): _probabilities(member.eval(), info, images, batch_size)
        for k, (member, _) in enumerate(load_image_members(model_dir, info))
    }
    return ensemble_val_figures(probabilities, {str(k): m.weight for k, m in enumerate(info.variants)}, labels)


def train_image_variants(
    plan: Plan,
    dataset_dir: str,
    model_dir: str,
    progress: ProgressFn | None = None,
    log_metrics: MetricsFn | None = None,
) -> TrainResult:
    """Train every member of the image plan's `variants` (see the module docstring); write the root last."""
    assert plan.variants is not None
    dataset = load_dataset(dataset_dir)
    members = variant_plans(plan)
    root_info = f"{model_dir}/{INFO_FILE}"
    if storage.exists(root_info):
        storage.delete(root_info)  # complete again only when every member is saved

    def train_member(
        member: Plan, folder: str, events: ProgressFn | None, epochs: MetricsFn | None, checkpoint: str | None
    ) -> TrainResult:
        return train_image_on(member, dataset, folder, events, epochs, checkpoint)[0]

    trained = train_variant_members(
        plan, members, model_dir, dataset.info.version_id, train_member, read_model_info, progress, log_metrics
    )
    first = read_model_info(f"{model_dir}/{variant_member_path(0)}")
    root = first.model_copy(
        update={
            "spec": plan.single_model,
            "plan_digest": plan.digest(),
            "weights_sha256": None,  # no weights of its own: the members'
            "structure": None,
            "variants": trained.records,
        }
    )
    artifacts = trained.artifacts | {INFO_FILE: storage.write_text(root_info, root.model_dump_json(indent=2))}
    ensemble = _ensemble_val_metrics(model_dir, dataset, plan.training.eval_batch_size)
    metrics = ensemble_metrics(trained, ensemble, plan.variants.normalized_weights())
    return TrainResult(metrics, trained.stages, artifacts, info=root)
