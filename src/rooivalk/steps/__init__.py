"""The library side of each KFP component: what a component body calls, around the core's entry points.

`pipeline_step` wraps every step (tracking, timing, events, errors); `registration` registers a trained
model or system; `retraining` prepares a retraining run; `system_steps` holds the counter-drone pipeline's
training steps. Above every other layer of the core (only _dev and the CLI sit higher), so it may import
any of them; KFP component bodies import it.
"""

from rooivalk.steps.step_context import StepContext, pipeline_step

__all__ = ["StepContext", "pipeline_step"]
