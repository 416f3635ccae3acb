"""Hyperparameter search over plan keys (`search:` in a plan, `rooivalk search`), on Optuna."""

from rooivalk.search.report import SearchReport
from rooivalk.search.runner import run_search

__all__ = ["SearchReport", "run_search"]
