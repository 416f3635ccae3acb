"""`evaluate_model` for sequence and table plans: test-split metrics, confusion matrix, gates, reference profile.

The report has the same keys as an image model's (rooivalk.evaluation.evaluate), so the gates, the
registration step and `rooivalk report` read both alike. The reference profile for drift monitoring
holds, per validation sample, what production data can be compared on: a table's raw feature
columns, or a sequence's length and the mean, spread and peak of its frames, with the model's
prediction and confidence.
"""

from __future__ import annotations

import numpy as np

from rooivalk.data.datasets import ArrayDataset, load_array_dataset
from rooivalk.data.sequence_dataset import SequenceDataset
from rooivalk.evaluation.ensemble import combine, score_ensemble
from rooivalk.evaluation.metrics import classification_metrics
from rooivalk.evaluation.profile import ProfileInfo, build_profile, prediction_columns, save_profile
from rooivalk.evaluation.results import REFERENCE_DIR, EvaluateResult, finish_evaluation, scored_metrics
from rooivalk.models.array_artifact import ArrayModelInfo, load_array_model
from rooivalk.models.array_inference import model_arrays
from rooivalk.plan import Plan
from rooivalk.training.array_probabilities import ensemble_weights, member_probabilities, predicted_probabilities


def _profile_columns(dataset: ArrayDataset, split: str) -> dict[str, np.ndarray]:
    if isinstance(dataset, SequenceDataset):
        sequences, lengths, _ = dataset.subset(split)
        steps = np.arange(sequences.shape[1])
        real = steps[None, :] < lengths[:, None]  # (n, T): statistics over real frames, not padding
        frames = np.where(real[:, :, None], sequences, np.nan).reshape(len(sequences), -1)
        return {
            "sequence_length": lengths.astype(np.float64),
            "sequence_mean": np.nanmean(frames, axis=1),
            "sequence_std": np.nanstd(frames, axis=1),
            "sequence_peak": np.nanmax(np.abs(frames), axis=1),
        }
    numeric, codes, _ = dataset.subset(split)
    info = dataset.info
    columns: dict[str, np.ndarray] = {
        name: numeric[:, f].astype(np.float64) for f, name in enumerate(info.numeric_features)
    }
    for f, feature in enumerate(info.categorical_features):
        columns[feature.name] = np.asarray(feature.categories, dtype=object)[codes[:, f]]
    return columns


def write_array_reference_profile(
    uri: str, plan: Plan, probabilities: np.ndarray, info: ArrayModelInfo, dataset: ArrayDataset, split: str
) -> ProfileInfo:
    columns = {**_profile_columns(dataset, split), **prediction_columns(probabilities, info.classes)}
    model_name = plan.tracking.registered_model or plan.name
    frame, profile = build_profile(columns, {}, dataset.info.version_id, model_name, split)
    return save_profile(uri, frame, profile)


def evaluate_array_model(
    plan: Plan, model_dir: str, dataset_dir: str, eval_dir: str, split: str = "test", reference: bool = True
) -> EvaluateResult:
    """Score the rnn or mlp model on a split; as rooivalk.evaluation.evaluate.evaluate_model."""
    model, info = load_array_model(model_dir)
    dataset = load_array_dataset(dataset_dir)
    arrays, labels = model_arrays(info, dataset, split)
    if len(labels) == 0:
        raise ValueError(f"{dataset_dir}: the {split!r} split is empty; nothing to evaluate")
    batch = plan.training.eval_batch_size
    members = member_probabilities(model, info, model_dir, arrays, batch)
    weights = ensemble_weights(info)
    ensemble = None
    probabilities = members["model"] if weights is None else combine(members, weights)
    if weights is not None:
        ensemble = score_ensemble(members, labels, weights, info.classes, criterion="accuracy")
    predictions = probabilities.argmax(1)
    report = {**classification_metrics(labels, predictions, info.classes), "classes": info.classes}
    metrics = scored_metrics(report, len(labels))
    if ensemble is not None:  # each member alone on the same rows, beside the ensemble the gates judge
        # (a variant ensemble's members are named by index: test_member_0_accuracy, ...)
        for score in ensemble.scores[:-1]:
            metrics[f"test_member_{score.name}_accuracy"] = float(score.metrics["accuracy"])
            metrics[f"test_member_{score.name}_log_loss"] = score.log_loss
        metrics["test_ensemble_log_loss"] = ensemble.ensemble.log_loss
        report["ensemble"] = ensemble.to_dict()
    reference_uri = None
    if reference and dataset.split_mask("val").any():
        reference_uri = f"{eval_dir}/{REFERENCE_DIR}"
        val_arrays, _ = model_arrays(info, dataset, "val")
        probabilities = predicted_probabilities(model, info, model_dir, val_arrays, batch)
        write_array_reference_profile(reference_uri, plan, probabilities, info, dataset, "val")
    return finish_evaluation(plan, report, metrics, eval_dir, split, dataset.info.version_id, reference_uri)
