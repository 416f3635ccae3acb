"""A cached head stage: the classifier trains and is scored on stored pre-head features.

While everything below the head is frozen (BatchNorm in eval mode), the rest of the model is a fixed
function, so each head epoch needs only the head: the stage's training subset and the validation
split go through the frozen model once per stage, and their features (N, F) are kept here.
"""

from __future__ import annotations

import torch

from rooivalk.training.engine.engine_view import EngineView
from rooivalk.training.engine.freezing import freeze_batchnorm_of_frozen
from rooivalk.training.engine.runtime import native_bf16
from rooivalk.training.engine.stages import ResolvedStage
from rooivalk.training.tasks.base import score_logits


class HeadFeatureCache:
    """Pre-head features per (stage, split), extracted once; a new stage drops the previous stage's."""

    def __init__(self) -> None:
        self._features: dict[tuple[int, str], torch.Tensor] = {}  # (stage index, split) -> (N, F)

    def features(self, trainer: EngineView, stage: ResolvedStage, split: str = "train") -> torch.Tensor:
        """Features (N, F) of the stage's training subset (`train`) or of the validation split (`val`)."""
        key = (trainer.position.stage_index, split)
        if key not in self._features:
            self._features = {k: v for k, v in self._features.items() if k[0] == key[0]}
            trainer.progress({"event": "message", "text": f"stage {stage.name}: caching features of {split}"})
            precision = trainer.spec.feature_precision
            bf16 = precision == "bf16" or (precision == "auto" and native_bf16(trainer.device))
            index = trainer.stage_subset() if split == "train" else None
            self._features[key] = trainer.task.extract_features(
                trainer.model, split, index, stage, trainer.spec.eval_batch_size, trainer.device, bf16
            )
            trainer.model.train()
            freeze_batchnorm_of_frozen(trainer.model, trainer.groups, set(stage.group_lrs))
        return self._features[key]

    def score(
        self, trainer: EngineView, model: torch.nn.Module, stage: ResolvedStage, shard: slice
    ) -> tuple[float, float, float]:
        """(correct, summed loss, count) of `model`'s head on this rank's shard of the cached val features."""
        head = trainer.task.eval_head(model)
        was_training = head.training
        head.eval()
        with torch.inference_mode():
            logits = head(self.features(trainer, stage, "val")[shard].to(trainer.device)).float().cpu()
        head.train(was_training)
        target = torch.as_tensor(trainer.task.val_labels[shard])
        return (*score_logits(logits, target), float(len(target)))
