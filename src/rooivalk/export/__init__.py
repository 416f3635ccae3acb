"""ONNX export + verification, static INT8 quantization, and CPU accuracy/latency of exported models."""

from rooivalk.export.benchmark import LatencyStats, measure_latency, onnx_accuracy, ort_session
from rooivalk.export.onnx_export import export_onnx, replace_conv2d_same, verify_onnx
from rooivalk.export.pipeline_step import ExportError, ExportResult, export_model
from rooivalk.export.quantize import QuantizeConfig, quantize_int8

__all__ = [
    "ExportError",
    "ExportResult",
    "LatencyStats",
    "QuantizeConfig",
    "export_model",
    "export_onnx",
    "measure_latency",
    "onnx_accuracy",
    "ort_session",
    "quantize_int8",
    "replace_conv2d_same",
    "verify_onnx",
]
