"""Rooivalk: declarative training plans for multi-sensor models, run as Kubeflow pipelines."""

__version__ = "0.1.0"
