"""The one place image references live. Tags equal the package version (Google Cloud Pipeline
Components' rule), so a compiled pipeline always names the image built from the same code."""

from rooivalk import __version__

REGISTRY = "ghcr.io/rooivalk"
CPU_IMAGE = f"{REGISTRY}/rooivalk-cpu:{__version__}"
GPU_IMAGE = f"{REGISTRY}/rooivalk-gpu:{__version__}"

# Which image each step runs in; training and export move to GPU_IMAGE on GPU node pools.
TRACKING_IMAGE = CPU_IMAGE
DATA_IMAGE = CPU_IMAGE
TRAIN_IMAGE = CPU_IMAGE
EVAL_IMAGE = CPU_IMAGE
EXPORT_IMAGE = CPU_IMAGE
MONITOR_IMAGE = CPU_IMAGE
