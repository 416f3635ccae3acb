"""Class probabilities of a trained sequence or table model on a split, one function for every caller:
evaluation, cross-validation's held-out folds and a variant ensemble's validation figures.

A model is one network, a table ensemble (the network and its XGBoost member, weighted by
`ensemble.weights`) or a variant ensemble (its members, weighted by `variants.weights`); the members'
softmax probabilities (N, K) are named as their weights are ("model" / "xgboost", or "0", "1", ...).
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax
from torch import nn

from rooivalk.models.array_artifact import ArrayModelInfo, load_xgboost_member
from rooivalk.models.array_inference import INPUTS, array_logits
from rooivalk.models.ensemble_weights import combine
from rooivalk.models.inference import Arrays
from rooivalk.models.variant_ensemble import VariantEnsemble
from rooivalk.training.xgboost_training import predict_probabilities


def member_probabilities(
    model: nn.Module, info: ArrayModelInfo, model_dir: str, arrays: Arrays, batch: int
) -> dict[str, np.ndarray]:
    """Softmax probabilities (N, K) of the model; with an ensemble of its XGBoost member too; of a variant
    ensemble, each member's, named by its index ("0", "1", ...)."""
    if isinstance(model, VariantEnsemble):
        return {
            str(k): softmax(array_logits(member, arrays, info.num_classes, batch), axis=1)
            for k, member in enumerate(model.members)
        }
    probabilities = {"model": softmax(array_logits(model, arrays, info.num_classes, batch), axis=1)}
    if info.ensemble is not None:
        booster = load_xgboost_member(model_dir, info)
        probabilities["xgboost"] = predict_probabilities(booster, np.asarray(arrays[INPUTS]))
    return probabilities


def ensemble_weights(info: ArrayModelInfo) -> dict[str, float] | None:
    """The members' weights by name (as member_probabilities names them), or None for a single model."""
    if info.ensemble is not None:
        return info.ensemble.weights
    if info.variants is not None:
        return {str(k): member.weight for k, member in enumerate(info.variants)}
    return None


def predicted_probabilities(
    model: nn.Module, info: ArrayModelInfo, model_dir: str, arrays: Arrays, batch: int
) -> np.ndarray:
    """(N, K): the model's, or its ensemble's weighted, probabilities."""
    members = member_probabilities(model, info, model_dir, arrays, batch)
    weights = ensemble_weights(info)
    return members["model"] if weights is None else combine(members, weights)
