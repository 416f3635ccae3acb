"""The one training engine: a plan's stages over one persistent optimizer (freezing, joining newly
unfrozen groups, per-group LRs, schedules), time budgets, checkpoints and exact resume, AMP, EMA,
early stopping and DDP. It knows nothing of images or sensors: a task (rooivalk.training.tasks) makes
its batches and scores them. `fit_model` (fitting) runs it on one model; `Trainer` (loop) is the loop.
"""
