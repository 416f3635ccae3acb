"""The rules of the training keys that act after or around the stages: `pruning` and `qat` (compression
phases, rooivalk.training.engine.phases) and `distillation` (a teacher's logits in the loss); each gives
the reason a section's model would not honour the key, or None."""

from __future__ import annotations

from rooivalk.plan.training_sections import DETECTION_TASK, FUSION_TASK, ModelTraining, Rule


def compression_rule(subject: str) -> Rule:
    """A phase after the stages (rooivalk.training.engine.phases), of classifiers trained in one process."""

    def rule(section: ModelTraining) -> str | None:
        if section.task == DETECTION_TASK:
            return f"{subject} applies to classifiers; detectors export through their own path (export.detector_export)"
        if section.training.distributed.processes > 1:
            return f"{subject} runs in one process after the stages; training.distributed launches several"
        return None

    return rule


def distillation_rule(section: ModelTraining) -> str | None:
    if section.task == DETECTION_TASK:
        return "a detector trains on its own losses (FCOS's focal, GIoU and centerness), not on class logits to distill"
    if section.task == FUSION_TASK:
        return "the fusion model trains on this run's cached sensor embeddings, which no teacher model takes as inputs"
    cached = [f"stages.{index}" for index, stage in enumerate(section.training.stages or []) if stage.cache_features]
    if cached:
        return (
            f"{', '.join(cached)} sets cache_features: a cached head stage never runs the full input through the "
            "model, so the teacher has nothing to compare with (drop cache_features to distill)"
        )
    return None


# Families whose channels torch-pruning cannot remove (rooivalk.models.pruning): method channels is refused.
CHANNEL_PRUNING_REFUSED: dict[str, str] = {
    "rnn": "torch-pruning cannot trace the GRU/LSTM layers of rnn models (method magnitude prunes their dense head)",
    "radar_sequence": (
        "torch-pruning cannot trace radar_sequence's GRU, and every channel group of its state-space blocks "
        "runs through LayerNorm or the scan's own parameters, which cannot be pruned exactly; use method magnitude"
    ),
}


def pruning_rule(section: ModelTraining) -> str | None:
    reason = compression_rule("pruning")(section)
    spec = section.training.pruning
    if reason is not None or spec is None or spec.method != "channels":
        return reason
    if section.family in CHANNEL_PRUNING_REFUSED:
        return CHANNEL_PRUNING_REFUSED[section.family]
    if section.warm_start:
        return (
            "retraining.warm_start loads the champion's weights into the architecture the plan builds; a "
            "channel-pruned champion's smaller layers do not fit it (use method magnitude)"
        )
    return None


def qat_rule(section: ModelTraining) -> str | None:
    reason = compression_rule("quantization-aware training")(section)
    pruning = section.training.pruning
    if reason is None and pruning is not None and pruning.method == "magnitude":
        return (
            "QAT fine-tunes every weight without magnitude pruning's masks, so the weights pruning zeroed would "
            "grow back; QAT follows pruning.method channels"
        )
    return reason
