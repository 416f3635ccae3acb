"""Which data, model and export keys apply to which format and model: honoured or refused with their path.

The training keys have their rules in rooivalk.plan.techniques; this module checks what the data
section, a model section and the export section must agree on:
- the data keys of a format: `image_size`, `channels` and `max_samples_per_class` are the image
  readers'; `label`, `features` and `sequence` the array readers' (and an NPZ sequence source names its
  arrays, not columns); `categorical` the table reader's;
- the simulator: a kind's own keys, and the format it writes;
- sequence and table models (families `rnn`, `mlp`) read `data.format: sequences` / `table`, take
  their number of inputs from the data and export to ONNX Runtime only;
- an `ensemble` joins a table plan's mlp.
Like the technique check it reads built-in families from `techniques.BUILTIN_TASKS` and never imports
torch; a plugin family is checked by its own builder. A plan key counts as set when it differs from its
default, as in the technique check.
"""

from __future__ import annotations

from typing import Any

from rooivalk.plan.data import ARRAY_FORMATS, DETECTION_FORMATS, SIMULATOR_FORMATS, DataSpec, SimulationSpec
from rooivalk.plan.techniques import ARRAY_TASKS, BUILTIN_TASKS, DETECTION_TASK, Problem

# The data format each array task reads.
TASK_FORMATS = {"sequence": "sequences", "table": "table"}
_MODEL_DEFAULTS = {"input_size": 224, "num_features": "auto"}
# A simulator kind's own keys: refused under another kind.
SIMULATOR_KEYS = {
    "counter_drone": ("image_size", "optical_field_px"),
    "sign_language": ("num_classes", "min_length", "max_length"),
    "attribution": (),
    "drone_frames": ("frame_width", "frame_height", "max_objects"),
    "shapes": ("frame_width", "frame_height", "max_objects"),
}


def _set(section: Any, key: str) -> bool:
    """Whether `key` of a pydantic section differs from its field's default."""
    field = type(section).model_fields[key]
    return bool(getattr(section, key) != field.get_default(call_default_factory=True))


def data_key_problems(data: DataSpec, path: str = "data") -> list[Problem]:
    """The data keys the format's reader would not use, and a simulator that does not write the format."""
    array = data.format in ARRAY_FORMATS
    boxes = data.format in DETECTION_FORMATS
    npz = data.format == "sequences" and data.source.lower().endswith(".npz")
    applies = {
        "image_size": (
            not array and not boxes,
            f"image readers resize images; data.format {data.format} "
            + ("indexes images at their own size (model.detector sets the input)" if boxes else "has none"),
        ),
        "channels": (
            not array and not boxes,
            f"image readers set channels; data.format {data.format} "
            + ("keeps each image's own (a detector reads RGB)" if boxes else "has none"),
        ),
        "max_samples_per_class": (not array and not boxes, "applies to image classification formats"),
        "label": (array and not npz, "applies to sequences and table columns (an NPZ source's labels are y)"),
        "features": (array and not npz, "applies to sequences and table columns (an NPZ source's are X)"),
        "categorical": (data.format == "table", "applies to data.format table"),
        "extra_sources": (boxes, "merging sources applies to data.format yolo and coco"),
        "class_map": (boxes, "renaming classes across sources applies to data.format yolo and coco"),
    }
    problems = [(f"{path}.{key}", reason) for key, (ok, reason) in applies.items() if not ok and _set(data, key)]
    for key in ("length", "step"):
        fits = data.format == "sequences" and not (npz and key == "step")
        if not fits and _set(data.sequence, key):
            problems.append((f"{path}.sequence.{key}", "applies to data.format sequences (CSV or Parquet for step)"))
    if data.simulate is not None:
        problems += _simulation_problems(data.simulate, data.format, f"{path}.simulate")
    return problems


def _simulation_problems(simulate: SimulationSpec, data_format: str, path: str) -> list[Problem]:
    own = SIMULATOR_KEYS[simulate.kind]
    others = {key for keys in SIMULATOR_KEYS.values() for key in keys} - set(own)
    problems = [
        (
            f"{path}.{key}",
            f"applies to kind {' or '.join(k for k, keys in SIMULATOR_KEYS.items() if key in keys)}, "
            f"not {simulate.kind}",
        )
        for key in sorted(others)
        if _set(simulate, key)
    ]
    wanted = SIMULATOR_FORMATS[simulate.kind]
    if wanted != data_format:
        problems.append((f"{path}.kind", f"{simulate.kind} writes data.format {wanted}, not {data_format}"))
    if simulate.kind == "sign_language" and simulate.count < simulate.num_classes:
        problems.append((f"{path}.count", f"{simulate.count} is below num_classes {simulate.num_classes}"))
    return problems


def model_key_problems(plan: Any) -> list[Problem]:
    """Every data, model and export key (and model/format pairing) the plan sets that its models would not use."""
    problems = data_key_problems(plan.data)
    if plan.model is not None:
        problems += _single_model(plan.model, plan.data.format)
        if BUILTIN_TASKS.get(plan.model.family) in ARRAY_TASKS and "tensorrt" in plan.export.targets:
            problems.append(("export.targets", f"tensorrt builds image models; {plan.model.family} models ship ONNX"))
    for name, sensor in (plan.sensors or {}).items():
        if sensor.model.num_features != "auto":
            problems.append((f"sensors.{name}.model.num_features", "sensor models take their input from the sensor"))
    if plan.model is not None and BUILTIN_TASKS.get(plan.model.family) == DETECTION_TASK:
        problems += _detector_plan_problems(plan)
    if plan.evaluation.tta is not None and (plan.model is None or plan.model.family != "detector"):
        problems.append(("evaluation.tta", "test-time augmentation with box fusion applies to detectors"))
    problems += _temperature_images_problems(plan)
    if plan.ensemble is not None and (plan.model is None or plan.model.family != "mlp"):
        problems.append(("ensemble", "an ensemble joins a table plan's mlp model (model.family mlp) and XGBoost"))
    return problems


def _temperature_images_problems(plan: Any) -> list[Problem]:
    """export.temperature_images counts a detector's calibration images: refused where nothing fits on them."""
    if not _set(plan.export, "temperature_images"):
        return []
    if plan.model is None or BUILTIN_TASKS.get(plan.model.family) != DETECTION_TASK:
        reason = "a classifier's temperature is fitted on the whole validation split; this key is a detector's"
        return [("export.temperature_images", reason)]
    if plan.export.temperature_scaling is not True:
        reason = "a detector fits per-class temperatures only with export.temperature_scaling: true"
        return [("export.temperature_images", reason)]
    return []


def attribution_problems(attribution: Any) -> list[Problem]:
    """What the attribution section's table plan cannot honour beyond the checks of any table plan (its
    paths are under `attribution.`): it has no monitoring section, so no reference to calibrate on."""
    if attribution.export.quantization.source == "reference":
        reason = "the attribution model has no monitoring reference profile; calibrate on train"
        return [("export.quantization.source", reason)]
    return []


def _single_model(model: Any, data_format: str) -> list[Problem]:
    task = BUILTIN_TASKS.get(model.family)
    if task is None:  # a plugin family: its builder checks its own spec
        return []
    problems: list[Problem] = []
    if model.detector is not None and task != DETECTION_TASK:
        problems.append(("model.detector", f"applies to family detector, not {model.family}"))
    if task == DETECTION_TASK or data_format in DETECTION_FORMATS:
        return problems + _detector_problems(model, data_format, task)
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


def _detector_problems(model: Any, data_format: str, task: str) -> list[Problem]:
    """A detector reads boxes (yolo, coco), and only a detector does; its input size is model.detector's."""
    if task != DETECTION_TASK:
        return [("model.family", f"data.format {data_format} holds boxes: it is read by family detector")]
    problems: list[Problem] = []
    if data_format not in DETECTION_FORMATS:
        problems.append(
            ("model.family", f"detectors read data.format {' or '.join(DETECTION_FORMATS)}, not {data_format}")
        )
    if model.input_size != _MODEL_DEFAULTS["input_size"]:
        problems.append(("model.input_size", "a detector's input is model.detector.input_height and input_width"))
    if model.num_features != _MODEL_DEFAULTS["num_features"]:
        problems.append(("model.num_features", "detectors take images"))
    return problems


def _detector_plan_problems(plan: Any) -> list[Problem]:
    """What a detector plan may not set beyond its model: what its export, evaluation and monitoring lack."""
    from rooivalk.plan.monitoring import MonitoringSpec
    from rooivalk.plan.techniques import set_leaves

    problems: list[Problem] = []
    ensemble = plan.model.detector.ensemble if plan.model.detector is not None else None
    if ensemble is not None and plan.evaluation.tta is not None:
        problems.append(("evaluation.tta", "test-time augmentation of a model.detector.ensemble is not built"))
    if plan.export.quantization.source == "reference":
        problems.append(("export.quantization.source", "a detector has no monitoring reference; calibrate on train"))
    if _set(plan.model, "drop_rate"):
        problems.append(("model.drop_rate", "the detector has no dropout (FCOS's towers and the backbone's own)"))
    reason = "drift monitoring of detectors is not built (no reference profile of images and boxes)"
    problems += [(f"monitoring.{leaf}", reason) for leaf in set_leaves(plan.monitoring, MonitoringSpec())]
    return problems
