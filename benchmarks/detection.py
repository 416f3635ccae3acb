"""The detector demo plan on 2 cores: mAP@0.5 against training time, INT8 against FP32, TTA and a 3-model ensemble.

Runs pipelines/plans/detection.yaml through the library steps (ingest, train, evaluate, export), as
`rooivalk run` does, and measures:
- the validation mAP@0.5 after every epoch against the training seconds so far, for three seeds of the
  plan (the curve, plotted: map_vs_time.png), and each model's test mAP@0.5 / mAP@0.5:0.95;
- the export step's variants of the first model: FP32 and static INT8 ONNX Runtime latency at batch 1
  and their test mAP@0.5 (the drop);
- test-time augmentation of the first model (hflip x scales 0.9 / 1.0 / 1.1, weighted boxes fusion):
  the mAP it adds and its latency per image against plain inference, both measured here;
- the three models merged by weighted boxes fusion: mAP against the best single model, and the latency
  of three models against one.

Writes detection.json, map_vs_time.png and README.md to --out; the JSON printed last has the figures and
ratio_to_baseline: the INT8 variant's batch-1 speed-up over FP32 (FP32 ms / INT8 ms), both measured in
this run.

    .venv/bin/python benchmarks/detection.py                          # the plan as it is (~15 min)
    .venv/bin/python benchmarks/detection.py --budget 60 --out /tmp/det-bench
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "pipelines" / "plans" / "detection.yaml"
SEEDS = (42, 43, 44)
TTA = {"hflip": True, "rotations": [0], "scales": [0.9, 1.0, 1.1]}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=None, help="training.budget_seconds (default: the plan's)")
    parser.add_argument("--work", default=str(ROOT / "runs" / "detection-benchmark"), help="datasets, models, exports")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "detection"))
    parser.add_argument("--readme-only", action="store_true", help="rewrite README.md from --out's detection.json")
    return parser.parse_args(argv)


def load_plan(budget: float | None, seed: int, work: Path) -> Any:
    import yaml

    from rooivalk.plan import validate_plan

    raw = yaml.safe_load(PLAN.read_text())
    raw["data"]["source"] = str(work / "shapes")
    raw["training"]["seed"] = seed
    raw["training"]["threads"] = 2
    raw["evaluation"] = {"gates": [], "tta": TTA}
    if budget is not None:
        raw["training"]["budget_seconds"] = budget
    return validate_plan(raw, origin=str(PLAN))


def train_one(plan: Any, dataset_dir: Path, model_dir: Path) -> dict[str, Any]:
    from rooivalk.training.trainer import train_model

    epochs: list[dict[str, float]] = []
    elapsed = 0.0

    def progress(event: dict[str, Any]) -> None:
        nonlocal elapsed
        if event.get("event") == "epoch_end":
            elapsed += float(event["epoch_seconds"])
            epochs.append({"seconds": elapsed, "val_map50": float(event["val_map50"]), "stage": event["stage"]})
            print(f"  {event['stage']} epoch {event['epoch']}: {elapsed:.0f} s, val mAP@0.5 {event['val_map50']:.3f}")

    started = time.perf_counter()
    result = train_model(plan, str(dataset_dir), str(model_dir), progress=progress)
    return {"curve": epochs, "wall_seconds": time.perf_counter() - started, "metrics": result.metrics}


def ensemble_figures(plans: list[Any], model_dirs: list[Path], dataset_dir: Path) -> dict[str, float]:
    """The models' test detections merged per image by weighted boxes fusion, and the latency of all vs one."""
    import torch

    from rooivalk.data.detection_dataset import load_detection_dataset
    from rooivalk.models.box_fusion import fuse_detections, keep_best
    from rooivalk.models.detection_metrics import GroundTruth, detection_metrics
    from rooivalk.models.detector_artifact import load_detector
    from rooivalk.models.detector_inference import ImageCache, detect_images

    torch.set_num_threads(2)
    test = load_detection_dataset(str(dataset_dir)).subset("test")
    cache = ImageCache()
    images = [cache.get(uri) for uri in test.image_uris]
    models = [load_detector(str(folder)) for folder in model_dirs]
    size = (models[0][1].input_height, models[0][1].input_width)
    per_model = [detect_images(model, lambda i: images[i], len(images), size, 16) for model, _ in models]
    most = models[0][1].detector.max_detections  # as many boxes as one model keeps
    fused = [
        keep_best(
            fuse_detections([found[row] for found in per_model], (int(image.shape[2]), int(image.shape[1]))), most
        )
        for row, image in enumerate(images)
    ]
    truths = [GroundTruth(*test.boxes_of(row)) for row in range(len(test))]
    classes, threshold = models[0][1].classes, models[0][1].operating_threshold
    singles = [detection_metrics(found, truths, classes, threshold)["map50"] for found in per_model]
    ensemble = detection_metrics(fused, truths, classes, threshold)

    def ms_per_image(members: list[Any]) -> float:
        timed = images[:20]
        for model, _ in members:
            detect_images(model, lambda i: timed[i], 1, size, 1)  # warm
        started = time.perf_counter()
        for image in timed:
            found = [detect_images(model, lambda _, shown=image: shown, 1, size, 1)[0] for model, _ in members]
            if len(found) > 1:
                fuse_detections(found, (int(image.shape[2]), int(image.shape[1])))
        return 1000 * (time.perf_counter() - started) / len(timed)

    return {
        "single_map50": singles,
        "best_single_map50": max(singles),
        "ensemble_map50": ensemble["map50"],
        "ensemble_map": ensemble["map"],
        "one_model_ms_per_image": ms_per_image(models[:1]),
        "ensemble_ms_per_image": ms_per_image(models),
    }


def plot_curves(runs: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 4.0), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for run in runs:
        curve = run["train"]["curve"]
        axes.plot(
            [p["seconds"] for p in curve], [p["val_map50"] for p in curve], marker="o", label=f"seed {run['seed']}"
        )
    axes.set_xlabel("training seconds (2 cores)")
    axes.set_ylabel("validation mAP@0.5")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title("detection.yaml: mAP@0.5 against training time")
    figure.savefig(path)


def export_figures(report_path: Path) -> dict[str, Any]:
    report = json.loads(report_path.read_text())
    model = report["models"]["model"]
    variants = {name: score for name, score in model["variants"].items() if score.get("latency_ms") is not None}
    return {"chosen": model["shipped"], "variants": variants}


def readme(result: dict[str, Any], argv: list[str]) -> str:
    """The results page: every figure from `result`, the command that made it."""
    command = " ".join(["benchmarks/detection.py", *argv])
    lines = [
        "# Detection: the demo plan's mAP against training time, INT8, TTA, a 3-model ensemble",
        "",
        f"Measured by `.venv/bin/python {command}` on {result['machine']} (no GPU), plan "
        f"`{result['plan']}` (budget {result['budget_seconds']} s per model), dataset "
        f"{result['dataset']['version_id']} ({result['dataset']['split_sizes']}, "
        f"{result['dataset']['num_boxes']} boxes).",
        "",
        "![validation mAP@0.5 against training seconds](map_vs_time.png)",
        "",
        "| seed | training s (wall) | epochs | best val mAP@0.5 | test mAP@0.5 | test mAP@0.5:0.95 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run in result["runs"]:
        curve = run["train"]["curve"]
        best = max(point["val_map50"] for point in curve)
        lines.append(
            f"| {run['seed']} | {run['train']['wall_seconds']:.0f} | {len(curve)} | {best:.3f} | "
            f"{run['test']['test_map50']:.3f} | {run['test']['test_map']:.3f} |"
        )
    fp32, int8 = result["export"]["variants"]["fp32"], result["export"]["variants"]["int8_static"]
    tta, ensemble = result["tta"], result["ensemble"]
    lines += [
        "",
        "Export of the seed-42 model (ONNX Runtime, CPU, batch 1; mAP@0.5 on the test split after the bundle's",
        "post-process):",
        "",
        "| variant | latency ms (median) | test mAP@0.5 |",
        "| --- | --- | --- |",
        f"| FP32 | {fp32['latency_ms']:.2f} | {fp32['test_map50']:.3f} |",
        f"| INT8 static | {int8['latency_ms']:.2f} | {int8['test_map50']:.3f} |",
        "",
        f"INT8 is {result['ratio_to_baseline']:.2f}x the speed of FP32 and loses "
        f"{result['int8_map50_drop']:.4f} mAP@0.5; "
        f"the export step shipped `{result['export']['chosen']}`.",
        "",
        "What test-time augmentation and an ensemble add, and cost (PyTorch, one image at a time):",
        "",
        "| inference | test mAP@0.5 | ms per image |",
        "| --- | --- | --- |",
        f"| one model | {result['test_map50']:.3f} | {tta['plain_ms_per_image']:.1f} |",
        f"| TTA (hflip x scales 0.9/1.0/1.1, WBF) | {tta['map50']:.3f} | {tta['ms_per_image']:.1f} |",
        f"| 3 models (seeds 42-44), WBF | {ensemble['ensemble_map50']:.3f} | {ensemble['ensemble_ms_per_image']:.1f} |",
        "",
        f"The best single model of the three scores {ensemble['best_single_map50']:.3f}; one model timed in the "
        f"ensemble's loop: {ensemble['one_model_ms_per_image']:.1f} ms per image.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> dict[str, Any]:
    from rooivalk import machine
    from rooivalk.data import ingest_data
    from rooivalk.evaluation.evaluate import evaluate_model
    from rooivalk.export.detector_export import export_detector

    args = parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    if args.readme_only:  # the page from a run's JSON, e.g. after a wording change
        result = json.loads((out / "detection.json").read_text())
        (out / "README.md").write_text(readme(result, result.get("argv", [])))
        return {"readme": str(out / "README.md")}
    out.mkdir(parents=True, exist_ok=True)
    dataset_dir = work / "dataset"
    first = load_plan(args.budget, SEEDS[0], work)
    ingested = ingest_data(first.data, str(dataset_dir))
    print(f"dataset {ingested.info.version_id}: {ingested.info.split_sizes}")
    runs, plans, model_dirs = [], [], []
    for seed in SEEDS:
        plan = load_plan(args.budget, seed, work)
        model_dir = work / f"model-seed{seed}"
        print(f"training seed {seed} (budget {plan.training.budget_seconds} s)")
        trained = train_one(plan, dataset_dir, model_dir)
        evaluated = evaluate_model(plan, str(model_dir), str(dataset_dir), str(work / f"eval-seed{seed}"))
        runs.append({"seed": seed, "train": trained, "test": evaluated.metrics})
        plans.append(plan)
        model_dirs.append(model_dir)
    print("exporting the first model (FP32, INT8 static)")
    export_plan = plans[0].model_copy(deep=True)
    export_plan.export.precisions = ["fp32", "int8_static"]
    export_detector(export_plan, str(model_dirs[0]), str(dataset_dir), str(work / "export"))
    exported = export_figures(work / "export" / "export_report.json")
    print("merging the three models")
    ensemble = ensemble_figures(plans, model_dirs, dataset_dir)
    test = runs[0]["test"]
    fp32, int8 = exported["variants"]["fp32"], exported["variants"]["int8_static"]
    result = {
        "machine": machine.describe(),
        "plan": str(PLAN.relative_to(ROOT)),
        "dataset": ingested.info.model_dump(include={"version_id", "split_sizes", "num_boxes"}),
        "budget_seconds": plans[0].training.budget_seconds,
        "argv": argv,
        "runs": runs,
        "test_map50": test["test_map50"],
        "test_map": test["test_map"],
        "tta": {
            "settings": TTA,
            "map50": test["test_tta_map50"],
            "gain": test["test_tta_map50"] - test["test_map50"],
            "ms_per_image": test["test_tta_latency_ms_per_image"],
            "plain_ms_per_image": test["test_latency_ms_per_image"],
        },
        "export": exported,
        "int8_map50_drop": fp32["test_map50"] - int8["test_map50"],
        "ensemble": ensemble,
        "ratio_to_baseline": fp32["latency_ms"] / int8["latency_ms"],
    }
    (out / "detection.json").write_text(json.dumps(result, indent=2))
    plot_curves(runs, out / "map_vs_time.png")
    (out / "README.md").write_text(readme(result, argv))
    summary = {k: result[k] for k in ("test_map50", "test_map", "int8_map50_drop", "ratio_to_baseline")}
    summary |= {"tta_gain": result["tta"]["gain"], "ensemble_map50": ensemble["ensemble_map50"]}
    return summary


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
