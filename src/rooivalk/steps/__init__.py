"""The library side of each KFP component: what a component body calls, around the core's entry points.

`pipeline_step` wraps every step (tracking, timing, events, errors); `registration` registers a trained
model or system; `retraining` prepares a retraining run; `multisensor` holds the counter-drone pipeline's
training steps. The top of the core: it may import every layer below it, and only the CLI imports it.
"""

from rooivalk.steps.step_context import StepContext, pipeline_step

__all__ = ["StepContext", "pipeline_step"]
