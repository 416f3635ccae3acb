"""`rooivalk report`: a Markdown report of a run, from its summary.json (used for docs/results).

Two kinds of run: one model (steps train_model, evaluate_model, export_model; a detector's has its own
sections, rooivalk.cli.report_detection) and a
multi-sensor system (train_sensor_<name>, cache_features, train_fusion, evaluate_system,
export_system); the steps present decide which report is rendered.
"""

from __future__ import annotations

import platform
from typing import Any

from rooivalk import machine
from rooivalk.cli.report_detection import detection_sections, is_detection_run
from rooivalk.cli.report_tables import ensemble_section, training_section

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
    steps = summary.get("steps", {})
    if "evaluate_system" in steps:
        return render_system_report(summary, command)
    if "train_model" not in steps or "evaluate_model" not in steps:
        raise ValueError(
            f"summary.json of plan {summary.get('plan')!r} (status {summary.get('status')!r}): neither a "
            f"single-model run (train_model, evaluate_model) nor a multi-sensor run (evaluate_system); "
            f"its steps: {sorted(steps)}"
        )
    if is_detection_run(steps):
        return "\n".join(
            [
                *_header_and_steps(summary, command),
                *detection_sections(steps),
                "## Gates",
                "",
                *_gate_lines(steps, ("evaluate_model", "export_model")),
                "",
            ]
        )
    train = steps["train_model"]
    evaluation = steps["evaluate_model"]["metrics"]
    # The PyTorch row's accuracy is the evaluation step's (same test split, same preprocessing).
    export = {**_with_legacy_names(steps["export_model"]["metrics"]), "test_accuracy": evaluation.get("test_accuracy")}
    lines = [
        *_header_and_steps(summary, command),
        *training_section(train, "best_val_accuracy", "val accuracy"),
        "## Test set",
        "",
        f"Accuracy **{evaluation.get('test_accuracy', 0):.4f}** on {evaluation.get('test_samples', 0):.0f} images; "
        f"macro F1 {evaluation.get('test_macro_f1', 0):.4f}; mean false-positive rate "
        f"{evaluation.get('test_false_positive_rate', 0):.4f}.",
        "",
        *ensemble_section(evaluation),
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
        *_gate_lines(steps, ("evaluate_model", "export_model")),
        "",
    ]
    return "\n".join(lines)


def _header_and_steps(summary: dict[str, Any], command: str) -> list[str]:
    return [
        f"# Run report: {summary['plan']}",
        "",
        f"Reproduce: `{command}`",
        "",
        f"Machine: {machine.describe()}, Python {platform.python_version()}. "
        f"Status: **{summary['status']}**, whole run {summary.get('seconds') or 0:.0f} s. "
        f"Dataset version `{summary.get('dataset_version')}`.",
        "",
        "## Steps",
        "",
        "| step | status | seconds |",
        "| --- | --- | ---: |",
        *[f"| {name} | {s['status']} | {s.get('seconds') or 0:.1f} |" for name, s in summary["steps"].items()],
        "",
    ]


def _gate_lines(steps: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    return [
        f"- {g['metric']} = {g['value']:.4f}: {'pass' if g['passed'] else 'FAIL'}"
        for name in names
        for g in steps.get(name, {}).get("gates", [])
    ]


def _pct(metrics: dict[str, Any], key: str) -> str:
    return f"{100 * metrics[key]:.1f}%" if key in metrics else "-"


def _points(metrics: dict[str, Any], key: str) -> str:
    """A fraction as signed percentage points (an accuracy drop of 0.002 is +0.20)."""
    return f"{100 * metrics[key]:+.2f}" if key in metrics else "-"


def render_system_report(summary: dict[str, Any], command: str) -> str:
    """The multi-sensor system's report: each sensor model's stages, the feature cache, fusion and
    degraded-mode accuracy on the test split, the shipped ONNX variants, and the gates."""
    steps = summary["steps"]
    sensors = [name.removeprefix("train_sensor_") for name in steps if name.startswith("train_sensor_")]
    evaluation = steps["evaluate_system"].get("metrics", {})
    export = steps.get("export_system", {}).get("metrics", {})
    cache = steps.get("cache_features", {}).get("metrics", {})
    # Stage records are the engine's (stage, steps, trainable share, best val accuracy; groups as
    # {group: lr}); summaries written before every model used it name sensor stages `name` and list groups.
    stage_rows = [
        f"| {model} | {s.get('stage') or s.get('name')} | {s.get('epochs', 0):.0f} | {_cell(s, 'steps', '.0f')} | "
        f"{', '.join(s.get('groups') or [])} | {_cell(s, 'best_val_accuracy', '.4f')} | {s.get('seconds') or 0:.0f} |"
        for model, step in [(name, steps[f"train_sensor_{name}"]) for name in sensors]
        + [("fusion", steps.get("train_fusion", {}))]
        for s in step.get("stages", [])
    ]
    lines = [
        *_header_and_steps(summary, command),
        "## Training stages",
        "",
        "| model | stage | epochs | steps | groups trained | best val accuracy | seconds |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: |",
        *stage_rows,
        "",
        f"Feature cache: {cache.get('encoder_forward_passes', 0):.0f} encoder forward passes, "
        f"{cache.get('cache_hits', 0):.0f} cache hits.",
        "",
        "## Test set",
        "",
        "| model | test accuracy |",
        "| --- | ---: |",
        *[f"| {name} alone | {_pct(evaluation, f'{name}_test_accuracy')} |" for name in sensors],
        f"| **fusion** | **{_pct(evaluation, 'fusion_test_accuracy')}** |",
        "",
        f"False-positive rate {_pct(evaluation, 'fusion_false_positive_rate')}. One sensor missing: mean "
        f"{_pct(evaluation, 'fusion_one_missing_mean')}, worst {_pct(evaluation, 'fusion_one_missing_worst')}; "
        f"two missing: mean {_pct(evaluation, 'fusion_two_missing_mean')}, worst "
        f"{_pct(evaluation, 'fusion_two_missing_worst')}.",
        "",
        "## Export (shipped variant per model, batch 1, CPU)",
        "",
        "| model | accuracy drop (pt) | median latency (ms) | p95 latency (ms) | size (MB) |",
        "| --- | ---: | ---: | ---: | ---: |",
        *[
            f"| {name} | {_points(export, f'{name}_accuracy_drop')} | "
            f"{_cell(export, f'{name}_latency_ms', '.2f')} | {_cell(export, f'{name}_latency_p95_ms', '.2f')} | "
            f"{_cell(export, f'{name}_size_mb', '.2f')} |"
            for name in [*sensors, "fusion"]
            if f"{name}_latency_ms" in export
        ],
        "",
        f"ONNX system test accuracy: FP32 {_pct(export, 'system_fp32_test_accuracy')}, shipped "
        f"{_pct(export, 'system_test_accuracy')}; end to end p95 "
        f"{_cell(export, 'end_to_end_latency_p95_ms', '.1f')} ms.",
        "",
        "## Gates",
        "",
        *_gate_lines(steps, ("evaluate_system", "export_system")),
        "",
    ]
    return "\n".join(lines)
