"""A trained XGBoost model in MLflow under MLflow's own `xgboost` flavor: `mlflow.xgboost.load_model`
gives the Booster back, `mlflow models serve` serves it, and the registry registers its `model_uri`."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import numpy as np
import xgboost as xgb


def _xgboost_requirement() -> str:
    """The distribution that provides `import xgboost` here: the CPU wheel (xgboost-cpu) or the full one.
    MLflow would write `xgboost==...`, whose wheel pulls NVIDIA NCCL, and it finds that out by loading
    the model in a subprocess (seconds per call)."""
    for distribution in ("xgboost-cpu", "xgboost"):
        try:
            return f"{distribution}=={metadata.version(distribution)}"
        except metadata.PackageNotFoundError:
            continue
    return f"xgboost=={xgb.__version__}"


def log_xgboost_model(model: xgb.Booster | xgb.XGBModel, name: str, input_example: np.ndarray | None = None) -> Any:
    """Inside an active MLflow run: log `model` under the xgboost flavor as `name`, with a signature
    inferred from `input_example` (a few rows) when given. Returns mlflow's ModelInfo (register with
    its `model_uri`)."""
    import mlflow
    import mlflow.xgboost

    if mlflow.active_run() is None:
        raise RuntimeError(f"log_xgboost_model({name!r}) needs an active MLflow run")
    example = None if input_example is None else np.ascontiguousarray(input_example, dtype=np.float32)
    return mlflow.xgboost.log_model(
        model,
        name=name,
        input_example=example,
        pip_requirements=[_xgboost_requirement()],
    )
