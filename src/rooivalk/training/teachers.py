"""The teacher of `training.distillation`: trained rooivalk classifiers, loaded and checked against their student.

A teacher member is any trained classifier whose classes are the student's dataset classes in the same
order, and whose inputs the student's batches can become (rooivalk.training.engine.distillation runs it
on every training batch):
- sequence and table students (rnn, mlp): array models (rooivalk.models.array_artifact) of the same data
  kind with the same input columns. A teacher whose standardization differs (fitted on another version
  of the data) gets the student's batch with the student's standardization undone and its own applied.
- image students: image models (rooivalk.models.artifact) with as many channels; the batch is
  re-normalized by the teacher's mean and std and resized to its input size where they differ.
- sensor students: models of the same sensor (rooivalk.models.sensor_artifacts) with the same
  preprocessing (an image sensor's re-normalized and resized as above).
Refused, naming the plan key: a missing folder, another kind of model (a detector, an image model for
a sequence student), other classes, and a table ensemble's XGBoost member (it takes raw rows, not the
student's encoded inputs). Members load on the CPU; the engine moves them to the training device.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from rooivalk import storage
from rooivalk.models.array_artifact import ArrayModelInfo, load_array_model, read_array_model_info
from rooivalk.models.array_inference import SEQUENCES
from rooivalk.models.artifact import INFO_FILE, load_trained_model
from rooivalk.models.sensor_artifacts import SENSOR_INFO, load_sensor_model
from rooivalk.models.sensor_encoding import sensor_encoding
from rooivalk.plan import DistillationSpec
from rooivalk.training.engine.distillation import InputMap, Teacher, TeacherMember
from rooivalk.training.tasks.base import Inputs


@dataclass(frozen=True)
class ImageInputs:
    """How a model's images are prepared: (B, in_chans, size, size), normalized by mean and std."""

    input_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _kind(uri: str, key: str) -> str:
    """The artifact kind at `uri`: "sensor", "sequences", "table", "detection" or "image"."""
    if storage.exists(f"{uri}/{SENSOR_INFO}"):
        return "sensor"
    if not storage.exists(f"{uri}/{INFO_FILE}"):
        raise ValueError(f"{key}: {uri} is not a trained rooivalk model (no {INFO_FILE} or {SENSOR_INFO} there)")
    kind = json.loads(storage.read_bytes(f"{uri}/{INFO_FILE}")).get("kind")
    return kind if isinstance(kind, str) else "image"


def _expect(kind: str, wanted: str, uri: str, key: str) -> None:
    if kind != wanted:
        raise ValueError(f"{key}: {uri} holds a model of kind {kind!r}; this student's teachers are of kind {wanted!r}")


def _same_classes(classes: list[str], student: list[str], uri: str, key: str) -> None:
    if classes != student:
        raise ValueError(
            f"{key}: {uri} was trained on classes {classes}, the student's dataset has {student} "
            "(a teacher's classes must be the student's, in the same order)"
        )


def _teacher(spec: DistillationSpec, key: str, load: Callable[[str], TeacherMember], num_classes: int) -> Teacher:
    members = [load(uri.rstrip("/")) for uri in spec.teachers]
    return Teacher(members, spec.temperature, spec.weight, num_classes, key)


# -- input maps: the student's batch as a teacher takes it ------------------------------------------
def _restandardize(
    student: tuple[list[float], list[float]], teacher: tuple[list[float], list[float]]
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """x (..., F) standardized by the student's (mean, std) of its first len(mean) columns -> by the
    teacher's; None where they agree."""
    if student == teacher:
        return None
    s_mean, s_std, t_mean, t_std = (torch.tensor(v, dtype=torch.float32) for v in (*student, *teacher))
    count = len(s_mean)

    def apply(x: torch.Tensor) -> torch.Tensor:
        raw = x[..., :count] * s_std.to(x.device) + s_mean.to(x.device)
        return torch.cat([(raw - t_mean.to(x.device)) / t_std.to(x.device), x[..., count:]], dim=-1)

    return apply


def _image_map(student: ImageInputs, teacher: ImageInputs, uri: str, key: str) -> InputMap:
    """Images (B, C, S, S) normalized as the student's -> at the teacher's size and normalization."""
    if teacher.in_chans != student.in_chans:
        raise ValueError(f"{key}: {uri} takes {teacher.in_chans}-channel images, the student {student.in_chans}")
    if teacher.mean == student.mean and teacher.std == student.std and teacher.input_size == student.input_size:
        return lambda inputs: inputs
    shape = (1, -1, 1, 1)
    s_mean, s_std = torch.tensor(student.mean).view(shape), torch.tensor(student.std).view(shape)
    t_mean, t_std = torch.tensor(teacher.mean).view(shape), torch.tensor(teacher.std).view(shape)

    def prepare(inputs: Inputs) -> Inputs:
        assert isinstance(inputs, torch.Tensor)
        unit = inputs.float() * s_std.to(inputs.device) + s_mean.to(inputs.device)  # back to [0, 1]
        if unit.shape[-1] != teacher.input_size or unit.shape[-2] != teacher.input_size:
            # A stage's input_size (or another model size): the teacher sees its own resolution.
            size = (teacher.input_size, teacher.input_size)
            unit = F.interpolate(unit, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (unit - t_mean.to(inputs.device)) / t_std.to(inputs.device)

    return prepare


# -- one loader per kind of student -----------------------------------------------------------------
def array_teacher(spec: DistillationSpec, student: ArrayModelInfo, where: str = "training") -> Teacher:
    """The teacher of an rnn or mlp student described by its artifact info (classes, input columns,
    standardization)."""
    key = f"{where}.distillation.teacher"

    def load(uri: str) -> TeacherMember:
        _expect(_kind(uri, key), student.kind, uri, key)
        info = read_array_model_info(uri)
        _same_classes(info.classes, student.classes, uri, key)
        if info.input_names != student.input_names:
            raise ValueError(
                f"{key}: {uri} takes inputs {info.input_names}, the student {student.input_names} (the same columns "
                "in the same order)"
            )
        if info.ensemble is not None:
            raise ValueError(
                f"{key}: {uri} is an ensemble with an XGBoost member, which takes raw table rows rather than the "
                "student's batches; distill from a model without `ensemble`"
            )
        model, _ = load_array_model(uri)
        restandardize = _restandardize(_standardization(student), _standardization(info))
        return TeacherMember(model, uri, _array_map(restandardize, student.kind))

    return _teacher(spec, key, load, student.num_classes)


def _standardization(info: ArrayModelInfo) -> tuple[list[float], list[float]]:
    if info.table is not None:
        table = info.table["standardization"]
        return list(table["mean"]), list(table["std"])
    return list(info.mean), list(info.std)


def _array_map(restandardize: Callable[[torch.Tensor], torch.Tensor] | None, kind: str) -> InputMap:
    if restandardize is None:
        return lambda inputs: inputs
    if kind == "table":  # inputs (B, F): standardized numeric columns first, then one-hot categories
        return lambda inputs: restandardize(inputs) if isinstance(inputs, torch.Tensor) else inputs

    def sequences(inputs: Inputs) -> Inputs:  # {"sequences": (B, T, F), "lengths": (B,)}
        assert isinstance(inputs, dict)
        return {**inputs, SEQUENCES: restandardize(inputs[SEQUENCES])}

    return sequences


def image_teacher(spec: DistillationSpec, classes: list[str], student: ImageInputs, where: str = "training") -> Teacher:
    """The teacher of a single-model plan's image classifier."""
    key = f"{where}.distillation.teacher"

    def load(uri: str) -> TeacherMember:
        _expect(_kind(uri, key), "image", uri, key)
        model, info = load_trained_model(uri)
        _same_classes(info.classes, classes, uri, key)
        inputs = ImageInputs(info.input_size, info.in_chans, tuple(info.mean), tuple(info.std))
        return TeacherMember(model, uri, _image_map(student, inputs, uri, key))

    return _teacher(spec, key, load, len(classes))


def _image_inputs(preprocessing: dict[str, Any]) -> ImageInputs:
    """An image sensor encoding's preprocessing (rooivalk.models.sensor_encoding.image_encoding)."""
    p = preprocessing
    return ImageInputs(int(p["input_size"]), int(p["in_chans"]), tuple(p["mean"]), tuple(p["std"]))


def sensor_teacher(spec: DistillationSpec, sensor: str, classes: list[str], preprocessing: dict[str, Any]) -> Teacher:
    """The teacher of sensor `sensor`'s model: models of the same sensor with the same preprocessing
    (`preprocessing`: the student's SensorEncoding.preprocessing)."""
    key = f"sensors.{sensor}.training.distillation.teacher"

    def load(uri: str) -> TeacherMember:
        _expect(_kind(uri, key), "sensor", uri, key)
        result, info = load_sensor_model(uri)
        if info.sensor != sensor:
            raise ValueError(f"{key}: {uri} is a model of sensor {info.sensor!r}, not {sensor!r}")
        _same_classes(info.classes, classes, uri, key)
        theirs = sensor_encoding(result.model, info.spec).preprocessing
        if theirs.get("kind") == "image" and preprocessing.get("kind") == "image":
            prepare = _image_map(_image_inputs(preprocessing), _image_inputs(theirs), uri, key)
            return TeacherMember(result.model, uri, prepare)
        if theirs != preprocessing:
            raise ValueError(f"{key}: {uri} preprocesses its inputs as {theirs}, the student as {preprocessing}")
        return TeacherMember(result.model, uri)

    return _teacher(spec, key, load, len(classes))
