"""`rooivalk report` for a detector's run: stages by validation mAP@0.5, the test split's mAP, per-class AP
and operating point (an ensemble's members beside their fusion), the export variants by mAP@0.5 and
latency (batch 1 with the NMS post-process), and the per-class temperatures' calibration error."""

from __future__ import annotations

from typing import Any

from rooivalk.cli.report_tables import training_section

PRECISIONS = (("fp32", "FP32"), ("fp16", "FP16"), ("int8_static", "INT8 static QDQ"), ("int8_dynamic", "INT8 dynamic"))


def is_detection_run(steps: dict[str, Any]) -> bool:
    return "test_map50" in steps.get("evaluate_model", {}).get("metrics", {})


def _cell(metrics: dict[str, Any], key: str, fmt: str) -> str:
    return format(metrics[key], fmt) if key in metrics else "-"


def detection_sections(steps: dict[str, Any]) -> list[str]:
    """The report's body below its header (rooivalk.cli.report renders the header, steps and gates)."""
    train = steps["train_model"]
    evaluation = steps["evaluate_model"]["metrics"]
    export = steps.get("export_model", {}).get("metrics", {})
    per_class = sorted(
        (key.removeprefix("test_ap50_"), value) for key, value in evaluation.items() if key.startswith("test_ap50_")
    )
    members = sorted(
        (int(key.removeprefix("test_member_").removesuffix("_map50")), value)
        for key, value in evaluation.items()
        if key.startswith("test_member_") and key.endswith("_map50")
    )
    ensemble = [
        "",
        "| ensemble member | test mAP@0.5 |",
        "| --- | ---: |",
        *[f"| {member} | {value:.4f} |" for member, value in members],
        f"| **fused (weighted boxes fusion)** | **{evaluation['test_map50']:.4f}** |",
    ]
    calibration = [
        f"Per-class temperatures: test D-ECE {_cell(export, 'model_ece_before', '.4f')} -> "
        f"{_cell(export, 'model_ece_after', '.4f')}; at the operating threshold with calibrated scores "
        f"precision {_cell(export, 'model_calibrated_precision', '.4f')}, "
        f"recall {_cell(export, 'model_calibrated_recall', '.4f')}, "
        f"F1 {_cell(export, 'model_calibrated_f1', '.4f')} (the bundle's reliability.png shows each class).",
        "",
    ]
    return [
        *training_section(train, "best_val_map50", "val mAP@0.5"),
        "## Test set",
        "",
        f"mAP@0.5 **{evaluation['test_map50']:.4f}**, mAP@0.5:0.95 {evaluation.get('test_map', 0):.4f} on "
        f"{evaluation.get('test_images', 0):.0f} images ({evaluation.get('test_boxes', 0):.0f} boxes); at the "
        f"operating threshold precision {evaluation.get('test_precision', 0):.4f}, recall "
        f"{evaluation.get('test_recall', 0):.4f}, F1 {evaluation.get('test_f1', 0):.4f}.",
        "",
        "| class | AP@0.5 |",
        "| --- | ---: |",
        *[f"| {name} | {value:.4f} |" for name, value in per_class],
        *(ensemble if members else []),
        "",
        "## Export (batch 1, CPU, with the NMS post-process)",
        "",
        "| runtime | test mAP@0.5 | median latency (ms) | p95 latency (ms) | size (MB) |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| PyTorch eager FP32 | {evaluation['test_map50']:.4f} | "
        f"{_cell(export, 'latency_torch_fp32_ms', '.3f')} | - | - |",
        *[
            f"| ONNX Runtime {label} | {_cell(export, f'model_{p}_test_map50', '.4f')} | "
            f"{_cell(export, f'model_{p}_latency_ms', '.3f')} | {_cell(export, f'model_{p}_latency_p95_ms', '.3f')} | "
            f"{_cell(export, f'model_{p}_size_mb', '.2f')} |"
            for p, label in PRECISIONS
            if f"model_{p}_test_map50" in export
        ],
        "",
        f"Shipped variant: mAP@0.5 drop {_cell(export, 'model_map50_drop', '.4f')}, "
        f"{export.get('speedup_vs_torch', 0):.1f}x faster than PyTorch eager FP32; ONNX vs PyTorch boxes within "
        f"{_cell(export, 'onnx_box_max_abs_diff', '.2e')} px.",
        "",
        *(calibration if "model_ece_after" in export else []),
    ]
