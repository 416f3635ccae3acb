"""Rich progress for a pipeline run, driven by the step events that steps append to a file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

_METRIC_KEYS = ("train_loss", "val_accuracy", "samples_per_second")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def bar_progress(console: Console) -> Progress:
    """Rooivalk's bar layout: description, bar, done/total, elapsed, and a free-text `info` field."""
    return Progress(
        TextColumn("{task.description}", style="bold"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    )


class PipelineProgress:
    """Three bars: pipeline steps, epochs of the current stage, batches of the current epoch."""

    def __init__(self, console: Console, steps: list[str]) -> None:
        self.console = console
        self.steps = steps
        self.progress = bar_progress(console)
        self.step_task: TaskID = self.progress.add_task("pipeline", total=len(steps), info="")
        self.epoch_task: TaskID | None = None
        self.batch_task: TaskID | None = None

    def __enter__(self) -> PipelineProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def handle(self, event: dict[str, Any]) -> None:
        kind, step = event.get("event"), event.get("step", "")
        if kind == "step_start":
            self.progress.update(self.step_task, info=step)
        elif kind == "step_end":
            self._step_end(event)
        elif kind == "stage":
            self._reset_bars()
            self.epoch_task = self.progress.add_task(
                f"stage {event['stage']}", total=event["epochs"], info=f"{event['trainable_params']:,} trainable params"
            )
        elif kind == "epoch":
            if self.batch_task is not None:
                self.progress.remove_task(self.batch_task)
            self.batch_task = self.progress.add_task(
                f"epoch {event['epoch']}/{event['epochs']}", total=event["batches"], info=""
            )
        elif kind == "batch" and self.batch_task is not None:
            self.progress.update(self.batch_task, completed=event["batch"])
        elif kind == "epoch_end":
            self._epoch_end(event)
        elif kind == "message":
            self.progress.console.log(f"[dim]{step}[/]: {event['text']}")

    def _reset_bars(self) -> None:
        for task in (self.epoch_task, self.batch_task):
            if task is not None:
                self.progress.remove_task(task)
        self.epoch_task = self.batch_task = None

    def _epoch_end(self, event: dict[str, Any]) -> None:
        if self.epoch_task is not None:
            self.progress.update(self.epoch_task, completed=event["epoch"])
        shown = "  ".join(f"{k}={_fmt(event[k])}" for k in _METRIC_KEYS if k in event)
        self.progress.console.log(f"stage {event['stage']} epoch {event['epoch']}/{event.get('epochs', '?')}: {shown}")

    def _step_end(self, event: dict[str, Any]) -> None:
        self._reset_bars()
        self.progress.advance(self.step_task)
        status = event["status"]
        colour = "green" if status == "succeeded" else "red"
        self.progress.console.log(f"[{colour}]{event['step']} {status}[/] in {event['seconds']:.1f} s")
        if status != "succeeded":
            self.progress.console.log(f"[red]{event.get('error', '')}[/]")


@contextmanager
def lr_find_progress(console: Console, steps: int) -> Iterator[Callable[[dict[str, Any]], None]]:
    """One bar over the LR sweep, showing the current LR and smoothed loss."""
    progress = bar_progress(console)
    task = progress.add_task("lr-find", total=steps, info="")

    def handle(event: dict[str, Any]) -> None:
        if event.get("event") == "batch":
            info = f"lr {event['lr']:.2e}  loss {event['loss']:.4f}"
            progress.update(task, completed=event["batch"], info=info)
        elif event.get("event") == "message":
            progress.console.print(event["text"])

    with progress:
        yield handle
