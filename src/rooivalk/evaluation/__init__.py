"""Evaluation: metrics, confusion matrices and validation gates."""

from rooivalk.evaluation.evaluate import EvaluateResult, evaluate_model
from rooivalk.evaluation.gates import GateFailure, check_gates

__all__ = ["EvaluateResult", "GateFailure", "check_gates", "evaluate_model"]
