"""Training tasks: what the one engine needs to know about a kind of model input.

Built-in: `image` (timm-style image classifiers), `tensor` (sensor models on preprocessed arrays),
`fusion` (the cross-modal transformer over cached embeddings), `sequence` and `table` (rnn and mlp
models of sequence and table datasets), `detection` (detectors on images with boxes). A model family names its task when
it registers (rooivalk.models.registry); installed packages add tasks through the `rooivalk.tasks`
entry-point group (docs/extending.md), loaded the first time an unknown task name is looked up.
"""

from __future__ import annotations

from rooivalk.plugins import TASKS_GROUP, PluginError, PluginInfo, Registry
from rooivalk.training.tasks.arrays import SequenceClassification, TableClassification
from rooivalk.training.tasks.base import Inputs, Task
from rooivalk.training.tasks.detection import DetectionTraining
from rooivalk.training.tasks.image import ImageClassification, TrainData
from rooivalk.training.tasks.tensor import FusionClassification, TensorClassification


def _accept(plugin: PluginInfo) -> type[Task]:
    task = plugin.obj
    if not (isinstance(task, type) and issubclass(task, Task)):
        raise PluginError(f"{plugin.describe()}: a training task entry point must name a Task subclass")
    if task.name != plugin.name:
        raise PluginError(f"{plugin.describe()}: the class's name is {task.name!r}; it must be the entry point's")
    return task


_TASKS: Registry[type[Task]] = Registry("training task", TASKS_GROUP, _accept)


def register_task(task: type[Task]) -> type[Task]:
    """Class decorator: make a Task subclass known under its `name`."""
    _TASKS.add(task.name, task)
    return task


for _builtin in (
    ImageClassification,
    TensorClassification,
    FusionClassification,
    SequenceClassification,
    TableClassification,
    DetectionTraining,
):
    register_task(_builtin)


def task_class(name: str) -> type[Task]:
    """The Task subclass of a task name (a plugin's is loaded on first use)."""
    task = _TASKS.lookup(name)
    if task is None:
        raise ValueError(f"unknown training task {name!r}; known: {_TASKS.known_names()}")
    return task


def plugin_task_info(family: str) -> tuple[str, bool]:
    """A plugin family's task and whether it takes image batches: the plan check's PluginResolver."""
    from rooivalk.models.registry import family_task

    task = family_task(family)
    return task, issubclass(task_class(task), ImageClassification)


def list_tasks() -> list[str]:
    """Every task name, plugins loaded."""
    return _TASKS.names()


def task_origin(name: str) -> str:
    """ "built-in" or the distribution and entry point a task came from."""
    return _TASKS.origin(name)


__all__ = [
    "DetectionTraining",
    "FusionClassification",
    "ImageClassification",
    "Inputs",
    "SequenceClassification",
    "TableClassification",
    "Task",
    "TensorClassification",
    "TrainData",
    "list_tasks",
    "plugin_task_info",
    "register_task",
    "task_class",
    "task_origin",
]
