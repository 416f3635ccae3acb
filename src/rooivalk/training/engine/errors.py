"""Why training stops early: the engine raises these, launchers and workers catch them."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the message names stage, epoch and step."""


class Preempted(RuntimeError):
    """SIGTERM arrived; a checkpoint was written and a rerun resumes from it."""
