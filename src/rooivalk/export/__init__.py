"""Edge export: verified ONNX, precision variants under accuracy gates, temperature, bundles, TensorRT.

Import the step functions from their modules (pipeline_step, system); this package re-exports the
building blocks users call directly.
"""

from rooivalk.export.benchmark import LatencyStats, measure_latency, onnx_accuracy, ort_session
from rooivalk.export.onnx_export import export_module, export_onnx, replace_conv2d_same, verify_module, verify_onnx
from rooivalk.export.pipeline_step import ExportResult, export_model
from rooivalk.export.predictor import Predictor, SystemPredictor
from rooivalk.export.quantize import QuantizeConfig, quantize_int8
from rooivalk.export.shipping import ExportError

__all__ = [
    "ExportError",
    "ExportResult",
    "LatencyStats",
    "Predictor",
    "QuantizeConfig",
    "SystemPredictor",
    "export_model",
    "export_module",
    "export_onnx",
    "measure_latency",
    "onnx_accuracy",
    "ort_session",
    "quantize_int8",
    "replace_conv2d_same",
    "verify_module",
    "verify_onnx",
]
