"""Which model and data keys apply to which model: a model section's keys are honoured or refused.

The training keys have their rules in rooivalk.plan.techniques; this module checks what a model
section and the data format must agree on: sequence and table models (families `rnn`, `mlp`) read
`data.format: sequences` / `table` and take their number of inputs from the data, image models
take `input_size`. Like the technique check it reads built-in families from
`techniques.BUILTIN_TASKS` and never imports torch; a plugin family is checked by its own builder.
"""

from __future__ import annotations

from typing import Any

from rooivalk.plan.techniques import ARRAY_TASKS, BUILTIN_TASKS, Problem

# The data format each array task reads.
TASK_FORMATS = {"sequence": "sequences", "table": "table"}
_MODEL_DEFAULTS = {"input_size": 224, "num_features": "auto"}


def model_key_problems(plan: Any) -> list[Problem]:
    """Every model key (and model/format pairing) the plan sets that its models would not use."""
    problems: list[Problem] = []
    if plan.model is not None:
        problems += _single_model(plan.model, plan.data.format)
    if plan.ensemble is not None and (plan.model is None or plan.model.family != "mlp"):
        problems.append(("ensemble", "an ensemble joins a table plan's mlp model (model.family mlp) and XGBoost"))
    for name, sensor in (plan.sensors or {}).items():
        if sensor.model.num_features != "auto":
            problems.append((f"sensors.{name}.model.num_features", "sensor models take their input from the sensor"))
    return problems


def _single_model(model: Any, data_format: str) -> list[Problem]:
    task = BUILTIN_TASKS.get(model.family)
    if task is None:  # a plugin family: its builder checks its own spec
        return []
    problems: list[Problem] = []
    if task in ARRAY_TASKS:
        wanted = TASK_FORMATS[task]
        if data_format != wanted:
            problems.append(("model.family", f"{model.family} models read data.format {wanted}, not {data_format}"))
        if model.input_size != _MODEL_DEFAULTS["input_size"]:
            problems.append(("model.input_size", f"{model.family} models take the data's features, not images"))
        return problems
    if data_format in TASK_FORMATS.values():
        families = ", ".join(f for f, t in BUILTIN_TASKS.items() if TASK_FORMATS.get(t) == data_format)
        problems.append(("model.family", f"data.format {data_format} is read by family {families}, not {model.family}"))
    if model.num_features != _MODEL_DEFAULTS["num_features"]:
        problems.append(("model.num_features", f"{model.family} models ({task} task) have a fixed input"))
    return problems
