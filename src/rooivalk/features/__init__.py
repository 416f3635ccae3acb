"""Frozen-encoder features: preprocessing per sensor and the content-addressed feature cache."""
