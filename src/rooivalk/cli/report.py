"""`rooivalk report`: a Markdown report of a run, from its summary.json (used for docs/results)."""

from __future__ import annotations

import platform
from typing import Any

from rooivalk import machine

_EXPORT_ROWS = (
    ("PyTorch eager FP32", "test_accuracy", "latency_torch_fp32_ms", None, None),
    *(
        (f"ONNX Runtime {label}", f"model_{p}_test_accuracy", f"model_{p}_latency_ms", f"model_{p}_latency_p95_ms",
         f"model_{p}_size_mb")
        for p, label in (("fp32", "FP32"), ("fp16", "FP16"), ("int8_static", "INT8 static QDQ"),
                         ("int8_dynamic", "INT8 dynamic"))
    ),
)  # fmt: skip


# Summaries written before per-variant export named FP32/INT8 metrics like this; old run folders still render.
_LEGACY_EXPORT_KEYS = {
    "model_fp32_test_accuracy": "fp32_test_accuracy",
    "model_fp32_latency_ms": "latency_ort_fp32_ms",
    "model_fp32_size_mb": "size_fp32_mb",
    "model_int8_static_test_accuracy": "int8_test_accuracy",
    "model_int8_static_latency_ms": "latency_ort_int8_ms",
    "model_int8_static_size_mb": "size_int8_mb",
    "model_accuracy_drop": "int8_accuracy_drop",
    "speedup_vs_torch": "speedup_int8_vs_torch",
}


def _with_legacy_names(metrics: dict[str, Any]) -> dict[str, Any]:
    return {**{new: metrics[old] for new, old in _LEGACY_EXPORT_KEYS.items() if old in metrics}, **metrics}


def _cell(metrics: dict[str, Any], key: str | None, fmt: str) -> str:
    return format(metrics[key], fmt) if key and key in metrics else "-"


def render_report(summary: dict[str, Any], command: str) -> str:
    steps = summary["steps"]
    train = steps["train_model"]
    evaluation = steps["evaluate_model"]["metrics"]
    # The PyTorch row's accuracy is the evaluation step's (same test split, same preprocessing).
    export = {**_with_legacy_names(steps["export_model"]["metrics"]), "test_accuracy": evaluation.get("test_accuracy")}
    lines = [
        f"# Run report: {summary['plan']}",
        "",
        f"Reproduce: `{command}`",
        "",
        f"Machine: {machine.describe()}, Python {platform.python_version()}. "
        f"Status: **{summary['status']}**, whole run {summary.get('seconds', 0):.0f} s. "
        f"Dataset version `{summary['dataset_version']}`.",
        "",
        "## Steps",
        "",
        "| step | status | seconds |",
        "| --- | --- | ---: |",
        *[f"| {name} | {s['status']} | {s.get('seconds') or 0:.1f} |" for name, s in steps.items()],
        "",
        "## Training stages",
        "",
        "| stage | epochs | trainable params | share of model | best val accuracy | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *[
            f"| {s['stage']} | {s['epochs']:.0f} | {s['trainable_params']:,.0f} | {s['trainable_share']:.1%} | "
            f"{s['best_val_accuracy']:.4f} | {s['seconds']:.0f} |"
            for s in train.get("stages", [])
        ],
        "",
        f"Training time: {train['metrics'].get('train_seconds', 0):.0f} s.",
        "",
        "## Test set",
        "",
        f"Accuracy **{evaluation.get('test_accuracy', 0):.4f}** on {evaluation.get('test_samples', 0):.0f} images; "
        f"macro F1 {evaluation.get('test_macro_f1', 0):.4f}; mean false-positive rate "
        f"{evaluation.get('test_false_positive_rate', 0):.4f}.",
        "",
        "## Export (batch 1, CPU)",
        "",
        "| runtime | test accuracy | median latency (ms) | p95 latency (ms) | size (MB) |",
        "| --- | ---: | ---: | ---: | ---: |",
        *[
            f"| {label} | {_cell(export, acc, '.4f')} | {_cell(export, lat, '.3f')} | {_cell(export, p95, '.3f')} "
            f"| {_cell(export, size, '.2f')} |"
            for label, acc, lat, p95, size in _EXPORT_ROWS
            if acc in export or label.startswith("PyTorch")
        ],
        "",
        f"Shipped variant: accuracy drop {export.get('model_accuracy_drop', 0) * 100:.2f} points, "
        f"{export.get('speedup_vs_torch', 0):.1f}x faster than PyTorch eager FP32. ONNX vs PyTorch max abs "
        f"difference on logits: {export.get('onnx_max_abs_diff', 0):.2e}, top-1 agreement "
        f"{export.get('onnx_top1_agreement', 0):.4f}. Softmax temperature {export.get('model_temperature', 1):.3f} "
        f"(ECE {export.get('model_ece_before', 0):.4f} -> {export.get('model_ece_after', 0):.4f}).",
        "",
        "## Gates",
        "",
        *[
            f"- {g['metric']} = {g['value']:.4f}: {'pass' if g['passed'] else 'FAIL'}"
            for name in ("evaluate_model", "export_model")
            for g in steps[name].get("gates", [])
        ],
        "",
    ]
    return "\n".join(lines)
