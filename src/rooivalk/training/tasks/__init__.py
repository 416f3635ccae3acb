"""Training tasks: what the one engine needs to know about a kind of model input.

Built-in: `image` (timm-style image classifiers), `tensor` (sensor models on preprocessed arrays),
`fusion` (the cross-modal transformer over cached embeddings). A model family names its task when
it registers (rooivalk.models.registry); installed packages add tasks through the `rooivalk.tasks`
entry-point group (docs/extending.md).
"""

from __future__ import annotations

from rooivalk.training.tasks.base import Inputs, Task
from rooivalk.training.tasks.image import ImageClassification, TrainData
from rooivalk.training.tasks.tensor import FusionClassification, TensorClassification

_TASKS: dict[str, type[Task]] = {
    task.name: task for task in (ImageClassification, TensorClassification, FusionClassification)
}
TASKS_ENTRY_POINT_GROUP = "rooivalk.tasks"


def register_task(task: type[Task]) -> type[Task]:
    """Class decorator: make a Task subclass known under its `name`."""
    if task.name in _TASKS and _TASKS[task.name] is not task:
        raise ValueError(f"training task {task.name!r} is already registered")
    _TASKS[task.name] = task
    return task


def list_tasks() -> dict[str, type[Task]]:
    """Every known task by name, plugins (entry points) included."""
    from rooivalk.plugins import load_entry_points

    for plugin in load_entry_points(TASKS_ENTRY_POINT_GROUP):
        loaded = plugin.load() if hasattr(plugin, "load") else getattr(plugin, "obj", None)
        if isinstance(loaded, type) and issubclass(loaded, Task):
            register_task(loaded)
    return dict(sorted(_TASKS.items()))


__all__ = [
    "FusionClassification",
    "ImageClassification",
    "Inputs",
    "Task",
    "TensorClassification",
    "TrainData",
    "list_tasks",
    "register_task",
]
