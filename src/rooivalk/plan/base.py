"""What every plan section shares: one strict base model and the plan's error type."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A plan section: unknown keys fail with their path instead of being ignored."""

    model_config = ConfigDict(extra="forbid")


class PlanError(ValueError):
    """A plan that cannot be read or does not validate; the message names the file and key path."""
