"""Fitting and statistics over what the benchmarks measured."""
