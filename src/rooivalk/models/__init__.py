"""Model families behind one factory, layer groups, weights, and the trained-model artifact."""

# Importing a family module registers it with the factory.
from rooivalk.models import acoustic_crepe as _acoustic_crepe  # noqa: F401
from rooivalk.models import array_families as _array_families  # noqa: F401
from rooivalk.models import detector as _detector  # noqa: F401
from rooivalk.models import radar_sequence as _radar_sequence  # noqa: F401
from rooivalk.models import rf_cnn_transformer as _rf_cnn_transformer  # noqa: F401
from rooivalk.models import timm_family as _timm_family  # noqa: F401
from rooivalk.models.artifact import ModelInfo, load_trained_model, read_model_info, save_trained_model
from rooivalk.models.groups import HEAD, LayerGroup, layer_groups, resolve_selectors
from rooivalk.models.registry import (
    create_model,
    create_unweighted_model,
    family_origin,
    family_task,
    list_families,
    register_family,
)
from rooivalk.models.timm_family import input_channels, normalization

__all__ = [
    "HEAD",
    "input_channels",
    "LayerGroup",
    "ModelInfo",
    "create_model",
    "create_unweighted_model",
    "family_origin",
    "family_task",
    "layer_groups",
    "list_families",
    "load_trained_model",
    "read_model_info",
    "normalization",
    "register_family",
    "resolve_selectors",
    "save_trained_model",
]
