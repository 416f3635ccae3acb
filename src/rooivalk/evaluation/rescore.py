"""Re-score a registered champion on the challenger's test set, so promotion compares like with like.

A champion's recorded score belongs to the dataset version it was evaluated on. When new data lands
and the challenger is trained on a new version, the two scores are not comparable; this module
downloads the champion's trained model from its registration run (`trained_model/`, plus
`sensors/<name>/` for a multi-sensor system) and scores it on the challenger's test split with the
same code the pipeline's evaluate step uses. A champion registered before these artifacts existed
raises `RescoreUnavailable`, and promotion keeps it (the reason says why).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable

from rooivalk.plan import Plan
from rooivalk.tracking.promotion import RescoreUnavailable
from rooivalk.tracking.registry import SENSORS_ARTIFACT, TRAINED_MODEL_ARTIFACT, download_run_artifact


def _without_gate_failures(plan: Plan) -> Plan:
    # A champion that now fails a gate must lose on its score, not abort the challenger's registration.
    evaluation = plan.evaluation.model_copy(update={"fail_on_gate": False})
    return plan.model_copy(update={"evaluation": evaluation})


def model_test_metrics(plan: Plan, dataset_dir: str, model_dir: str) -> dict[str, float]:
    """Test metrics (`test_accuracy`, ...) of a trained model folder on `dataset_dir`'s test split."""
    from rooivalk.data.datasets import load_any_dataset
    from rooivalk.evaluation.evaluate import evaluate_model
    from rooivalk.models.array_artifact import is_array_model
    from rooivalk.models.array_artifact import model_classes as read_classes
    from rooivalk.models.detector_artifact import is_detector_model

    model_classes = read_classes(model_dir)
    dataset = load_any_dataset(dataset_dir)
    dataset_classes = dataset.info.classes
    detector = is_detector_model(model_dir)
    if is_array_model(model_dir) != (dataset.info.format in ("sequences", "table")) or detector != (
        dataset.info.format == "detection"
    ):
        raise RescoreUnavailable(f"it is a model of other data than dataset {dataset.info.version_id}")
    if model_classes != dataset_classes:
        raise RescoreUnavailable(f"its classes {model_classes} are not the dataset's {dataset_classes}")
    with tempfile.TemporaryDirectory(prefix="rooivalk-rescore-") as eval_dir:
        try:
            result = evaluate_model(_without_gate_failures(plan), model_dir, dataset_dir, eval_dir, reference=False)
        except ValueError as error:  # the dataset lacks a feature the champion takes
            raise RescoreUnavailable(str(error)) from None
        return result.metrics


def system_test_metrics(plan: Plan, dataset_dir: str, sensor_dirs: list[str], fusion_dir: str) -> dict[str, float]:
    """Test metrics (`fusion_test_accuracy`, ...) of sensor models + fusion model on `dataset_dir`'s
    test split; their features come from the plan's feature cache (new data costs forward passes)."""
    from rooivalk.data.multisensor_dataset import load_multisensor
    from rooivalk.evaluation.multisensor_report import evaluate_system, flat_metrics
    from rooivalk.features.fusion_features import cache_sensor_features
    from rooivalk.models.fusion_artifacts import load_fusion_model
    from rooivalk.models.sensor_artifacts import load_sensor_models

    dataset = load_multisensor(dataset_dir)
    fusion, info = load_fusion_model(fusion_dir)
    if info.classes != dataset.info.classes:
        raise RescoreUnavailable(f"its classes {info.classes} are not the dataset's {dataset.info.classes}")
    sensors = load_sensor_models(sensor_dirs, dataset, same_version=False)
    _, spec = plan.multisensor_parts()
    with tempfile.TemporaryDirectory(prefix="rooivalk-rescore-") as work:
        features = cache_sensor_features(dataset, sensors, spec.cache_uri or f"{work}/cache")
        return flat_metrics(evaluate_system(dataset, sensors, features, fusion))


def champion_rescorer(
    tracking_uri: str, plan: Plan, name: str, dataset_dir: str, metric: str, system: bool
) -> Callable[[str], float]:
    """`rescore(version) -> score`: the registered version's `metric` on `dataset_dir`'s test split."""
    from mlflow.tracking import MlflowClient

    def rescore(version: str) -> float:
        run_id = MlflowClient(tracking_uri=tracking_uri).get_model_version(name, version).run_id
        if not run_id:
            raise RescoreUnavailable(f"version {version} has no registration run")
        with tempfile.TemporaryDirectory(prefix="rooivalk-champion-") as work:
            model_dir = str(download_run_artifact(tracking_uri, run_id, TRAINED_MODEL_ARTIFACT, work))
            if system:
                sensors = download_run_artifact(tracking_uri, run_id, SENSORS_ARTIFACT, work)
                sensor_dirs = sorted(str(folder) for folder in sensors.iterdir() if folder.is_dir())
                metrics = system_test_metrics(plan, dataset_dir, sensor_dirs, model_dir)
            else:
                metrics = model_test_metrics(plan, dataset_dir, model_dir)
        if metric not in metrics:
            raise RescoreUnavailable(f"its evaluation has no {metric!r}")
        return metrics[metric]

    return rescore
