"""Frozen-encoder features: the content-addressed feature cache and the fusion features built from it."""
