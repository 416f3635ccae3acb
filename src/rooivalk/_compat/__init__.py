"""Compatibility shims for the dependency stack (see docs/dependencies.md)."""
