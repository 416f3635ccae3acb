"""The training report's content, independent of its format: sections of paragraphs, tables and figures
built from a run folder (rooivalk.cli.report_data). rooivalk.cli.report_html renders them as one
self-contained HTML file; the Markdown report links the same figures as PNG files.

A section whose data the run lacks says so in a sentence instead of vanishing, so a reader can tell
"no requirements in the plan" from "the report forgot them".
"""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Callable
from typing import Any

from rooivalk import machine
from rooivalk.cli.report_checks import gates_section, requirements_section
from rooivalk.cli.report_data import RunFolder
from rooivalk.cli.report_figures import (
    confusion_matrix,
    degraded_bars,
    per_class_bars,
    reliability_diagram,
    stage_spans,
    training_curves,
)
from rooivalk.cli.report_parts import Figure, Section, Table, cell


def _draw(folder: RunFolder, key: str, caption: str, alt: str, draw: Callable[[], bytes]) -> Figure | str:
    """The figure, or a sentence naming why it could not be drawn (a bad figure costs itself, not the report)."""
    try:
        return Figure(key, caption, alt, draw())
    except Exception as error:  # matplotlib or malformed data: report it and go on
        folder.notes.append(f"figure {key} not drawn: {type(error).__name__}: {error}")
        return f"Figure {key} could not be drawn ({type(error).__name__}: {error})."


def build_sections(folder: RunFolder) -> list[Section]:
    return [
        _overview(folder),
        _lineage(folder),
        _training(folder),
        *_evaluation(folder),
        _calibration(folder),
        _export(folder),
        *([_degraded(folder)] if folder.is_system else []),
        requirements_section(folder),
        gates_section(folder),
        *([Section("Notes", [Table(["what is missing"], [[n] for n in folder.notes])])] if folder.notes else []),
    ]


def _when(folder: RunFolder) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(folder.summary_path.stat().st_mtime))


def _overview(folder: RunFolder) -> Section:
    summary = folder.summary
    environment = (folder.export or {}).get("environment") or {}
    rows = [
        ["plan", str(summary.get("plan"))],
        ["pipeline", str(summary.get("pipeline"))],
        ["status", str(summary.get("status")) + (f": {summary['error']}" if summary.get("error") else "")],
        ["dataset version", str(summary.get("dataset_version"))],
        ["finished", _when(folder)],
        ["whole run", f"{summary.get('seconds') or 0:.0f} s"],
        ["report rendered on", f"{machine.describe()}, Python {platform.python_version()}"],
    ]
    if environment:
        rows.append(
            [
                "export measured on",
                f"{environment.get('machine')}, {environment.get('cpu_threads')} "
                f"threads, GPU {environment.get('gpu') or 'none'}",
            ]
        )
    steps = Table(
        ["step", "status", "seconds"],
        [[name, str(step.get("status")), f"{step.get('seconds') or 0:.1f}"] for name, step in folder.steps.items()],
    )
    return Section("Run", [Table(["", ""], rows), steps])


def _lineage(folder: RunFolder) -> Section:
    labels = (
        ("dataset_version", "dataset version"),
        ("plan_digest", "plan digest (sha256)"),
        ("git_commit", "git commit"),
        ("packages", "package versions"),
        ("mlflow_run", "MLflow parent run"),
    )
    rows = [[label, folder.lineage.get(key, "not recorded")] for key, label in labels]
    registered = [step["registered_model"] for step in folder.steps.values() if step.get("registered_model")]
    rows += [["registered model version", name] for name in registered]
    return Section("Lineage", [Table(["", ""], rows)])


def _training(folder: RunFolder) -> Section:
    section = Section("Training curves")
    if not folder.curves:
        section.parts.append("The run folder has no per-epoch events (events.jsonl), so no curves.")
    for curve in folder.curves:
        stages = ", ".join(f"{s} (epochs {a}-{b})" for s, a, b in stage_spans(curve.stages))
        section.parts.append(
            _draw(
                folder,
                f"training-{curve.model}",
                f"{curve.model}: train and validation loss, validation accuracy and learning rate by epoch; dashed "
                f"lines mark where each stage starts: {stages}.",
                f"Line charts of {curve.model}'s losses, validation accuracy and learning rate over "
                f"{len(curve.stages)} epochs in {len(stage_spans(curve.stages))} stages.",
                functools.partial(training_curves, curve),
            )
        )
    rows = [
        [
            model,
            str(s.get("stage") or s.get("name")),
            cell(s.get("epochs"), ".0f"),
            cell(s.get("steps"), ".0f"),
            ", ".join(s.get("groups") or []),
            cell(s.get("best_val_accuracy", s.get("best_val_map50")), ".4f"),
            cell(s.get("seconds"), ".0f"),
        ]
        for model, step in _training_steps(folder)
        for s in step.get("stages", [])
    ]
    if rows:
        section.parts.append(
            Table(["model", "stage", "epochs", "steps", "groups trained", "best val score", "seconds"], rows)
        )
    return section


def _training_steps(folder: RunFolder) -> list[tuple[str, dict[str, Any]]]:
    return [
        (name.removeprefix("train_sensor_").removeprefix("train_"), step)
        for name, step in folder.steps.items()
        if name.startswith("train_")
    ]


def _evaluation(folder: RunFolder) -> list[Section]:
    evaluation = folder.evaluation
    metrics = {
        key: value
        for name in ("evaluate_model", "evaluate_system")
        for key, value in folder.steps.get(name, {}).get("metrics", {}).items()
    }
    section = Section("Test set", [Table(["metric", "value"], [[k, cell(v, ".4f")] for k, v in metrics.items()])])
    if evaluation is None:
        section.parts.append("No evaluation report could be read: no confusion matrix or per-class figures.")
        return [section]
    results = evaluation.get("results", {})
    split = str(evaluation.get("split") or results.get("split") or "test")
    per_class = evaluation.get("per_class") or results.get("fusion", {}).get("per_class") or {}
    if "sensors" in results:
        section.parts.append(
            Table(
                ["model", f"{split} accuracy"],
                [
                    *[[f"{name} alone", cell(r.get("accuracy"), ".4f")] for name, r in results["sensors"].items()],
                    ["fusion", cell(results.get("fusion", {}).get("accuracy"), ".4f")],
                ],
            )
        )
    section.parts.append(_confusion(folder, evaluation, split))
    if per_class and all(isinstance(v, dict) and "recall" in v for v in per_class.values()):
        columns = ("precision", "recall", "f1", "false_positive_rate")
        section.parts.append(
            Table(
                ["class", "precision", "recall", "F1", "FPR", "support"],
                [
                    [name, *[cell(v.get(c), ".4f") for c in columns], cell(v.get("support"), ".0f")]
                    for name, v in per_class.items()
                ],
            )
        )
        section.parts.append(
            _draw(
                folder,
                "per-class",
                f"Precision, recall and F1 per class on the {split} split.",
                f"Grouped bar chart of precision, recall and F1 for {len(per_class)} classes.",
                lambda: per_class_bars(per_class, f"per-class metrics ({split} split)"),
            )
        )
    return [section]


def _confusion(folder: RunFolder, evaluation: dict[str, Any], split: str) -> Figure | str:
    matrix, classes = evaluation.get("confusion_matrix"), evaluation.get("classes")
    if matrix and classes:
        caption = f"Confusion matrix on the {split} split (rows: true class, columns: predicted)."
    elif folder.reliability is not None:  # a fusion evaluation reports no matrix; the reference profile has one
        matrix, classes, split = folder.reliability.confusion(), folder.reliability.classes, folder.reliability.split
        caption = (
            f"Confusion matrix on the {split} split, from the reference profile's predictions (the "
            "evaluation report holds no test-split matrix for this run). Rows: true, columns: predicted."
        )
    else:
        return "No confusion matrix: the evaluation report has none and the run has no reference profile."
    return _draw(
        folder,
        "confusion-matrix",
        caption,
        f"Heat map of predicted against true class counts for {len(classes)} classes.",
        lambda: confusion_matrix(matrix, classes, f"confusion matrix ({split} split)"),
    )


def _calibration(folder: RunFolder) -> Section:
    section = Section("Calibration")
    reliability = folder.reliability
    if reliability is None:
        section.parts.append("No reliability diagram: the run has no reference profile with labels to score it.")
    else:
        section.parts.append(
            _draw(
                folder,
                "reliability",
                f"Reliability diagram on the {reliability.split} split ({len(reliability.correct)} samples, the "
                f"reference profile's top-1 confidence before temperature scaling): accuracy per confidence bin "
                f"against the diagonal of perfect calibration; ECE {reliability.ece():.4f} over "
                f"{reliability.bins} bins.",
                "Bar chart of accuracy per top-1 confidence bin with the diagonal of perfect calibration, and the "
                "share of samples per bin below it.",
                lambda: reliability_diagram(reliability, f"reliability ({reliability.split} split)"),
            )
        )
    measured = [
        [name, cell(m.get("temperature"), ".3f"), cell(m.get("ece_before"), ".4f"), cell(m.get("ece_after"), ".4f")]
        for name, model in ((folder.export or {}).get("models") or {}).items()
        if (m := model.get("measured") or {})
    ]
    if measured:
        section.parts.append("Temperature scaling fitted at export (the shipped bundle's softmax temperature):")
        section.parts.append(Table(["model", "temperature", "ECE before", "ECE after"], measured))
    return section


def _export(folder: RunFolder) -> Section:
    models = (folder.export or {}).get("models") or {}
    if not models:
        return Section("Export variants", ["No export report with per-variant figures could be read."])
    rows = [
        [
            name,
            precision,
            cell(v.get("test_accuracy"), ".4f"),
            cell(100 * v["accuracy_drop"], "+.2f") if isinstance(v.get("accuracy_drop"), int | float) else "-",
            cell(v.get("top1_agreement"), ".4f"),
            cell(v.get("latency_ms"), ".3f"),
            cell(v.get("latency_p95_ms"), ".3f"),
            cell(v.get("size_mb"), ".2f"),
            "yes" if model.get("shipped") == precision else "",
            str(v.get("reason", "")),
        ]
        for name, model in models.items()
        for precision, v in (model.get("variants") or {}).items()
    ]
    latency = (folder.export or {}).get("latency") or {}
    return Section(
        "Export variants",
        [
            f"ONNX Runtime, batch {latency.get('batch_size', 1)}, {latency.get('runs', '?')} timed runs; accuracy drop "
            "in percentage points against FP32; the shipped variant of each model is marked.",
            Table(
                [
                    "model",
                    "precision",
                    "test accuracy",
                    "drop (pt)",
                    "top-1 agreement",
                    "p50 latency (ms)",
                    "p95 latency (ms)",
                    "size (MB)",
                    "shipped",
                    "why",
                ],
                rows,
            ),
        ],
    )


def _degraded(folder: RunFolder) -> Section:
    fusion = ((folder.evaluation or {}).get("results") or {}).get("fusion") or {}
    degraded, summary = fusion.get("degraded") or [], fusion.get("degraded_summary") or {}
    metrics = folder.steps.get("evaluate_system", {}).get("metrics", {})
    section = Section(
        "Degraded mode",
        [
            Table(
                ["sensors missing", "mean accuracy", "worst accuracy"],
                [
                    ["none", cell(summary.get("full", metrics.get("fusion_test_accuracy")), ".4f"), ""],
                    [
                        "one",
                        cell(metrics.get("fusion_one_missing_mean"), ".4f"),
                        cell(metrics.get("fusion_one_missing_worst"), ".4f"),
                    ],
                    [
                        "two",
                        cell(metrics.get("fusion_two_missing_mean"), ".4f"),
                        cell(metrics.get("fusion_two_missing_worst"), ".4f"),
                    ],
                ],
            )
        ],
    )
    if degraded:
        section.parts.append(
            Table(
                ["sensors removed", "test accuracy", "events with no sensor left"],
                [
                    [
                        " + ".join(r.get("removed") or []) or "none",
                        cell(r.get("accuracy"), ".4f"),
                        cell(r.get("events_without_any_sensor"), ".0f"),
                    ]
                    for r in degraded
                ],
            )
        )
        section.parts.append(
            _draw(
                folder,
                "degraded-mode",
                "Fusion test accuracy with each set of sensors removed (first bar: all present).",
                f"Bar chart of fusion accuracy for {len(degraded)} sensor combinations.",
                lambda: degraded_bars(degraded, "degraded mode (test split)"),
            )
        )
    return section
