"""The one place image references live. Tags equal the package version (Google Cloud Pipeline
Components' rule), so a compiled pipeline always names the image built from the same code."""

from rooivalk import __version__

REGISTRY = "ghcr.io/rooivalk"
CPU_IMAGE = f"{REGISTRY}/rooivalk-cpu:{__version__}"
GPU_IMAGE = f"{REGISTRY}/rooivalk-gpu:{__version__}"

# Which image each step runs in. Steps that can use a GPU (training, encoder forward passes for the
# feature cache, export with TensorRT) run the GPU image: CUDA torch falls back to the CPU on a node
# without one, so a plan without GPU requests still runs. The rest stay on the smaller CPU image.
TRACKING_IMAGE = CPU_IMAGE
DATA_IMAGE = CPU_IMAGE
TRAIN_IMAGE = GPU_IMAGE
FEATURES_IMAGE = GPU_IMAGE
EVAL_IMAGE = CPU_IMAGE
EXPORT_IMAGE = GPU_IMAGE
MONITOR_IMAGE = CPU_IMAGE

# The steps whose image is the GPU image (component function names); tests check every component.
GPU_STEPS = frozenset(
    {
        "train_model",
        "train_sensor",
        "train_fusion",
        "train_attribution",
        "cache_features",
        "export_model",
        "export_system",
        "search_worker",  # its trials train
    }
)


def with_registry(image: str, registry: str) -> str:
    """The same image and tag pulled from another registry (a plan's `cluster.image_registry` mirror)."""
    if not image.startswith(REGISTRY + "/"):
        raise ValueError(f"{image} is not a rooivalk image (expected {REGISTRY}/...)")
    return f"{registry.rstrip('/')}/{image[len(REGISTRY) + 1 :]}"
