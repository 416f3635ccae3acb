"""A variant ensemble of a tiny image plan (two test_efficientnet members at 32 px, seeds 0 and 1) through
training, evaluation and export: members train into members/<k>, the root's model.json (written last)
records their digests, a rerun with checkpoint resume keeps them; evaluation scores each member and the
probability-averaged ensemble; the export ships one ONNX graph whose probabilities are the members' PyTorch
probabilities averaged, which the bundle's Predictor classifies with as any image bundle. Refusals: an
image plan's members share the architecture and the image input, and train in one process."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from rooivalk.data import ingest_data
from rooivalk.data.dataset import load_dataset
from rooivalk.data.transforms import to_model_input
from rooivalk.evaluation.evaluate import evaluate_model, predict_probabilities
from rooivalk.export import Predictor, export_model
from rooivalk.export.benchmark import ort_session
from rooivalk.export.onnx_export import INPUT_NAME, run_batched
from rooivalk.models.artifact import load_image_members, load_trained_model, read_model_info
from rooivalk.models.variant_ensemble import VariantEnsemble
from rooivalk.plan import DataSpec, Plan, PlanError, validate_plan
from rooivalk.steps.registration import variant_ensemble_tags
from rooivalk.training import train_model
from tests.conftest import make_image_folder

MEMBERS = [{}, {"training.seed": 1, "training.lr": 0.002}]


def _raw(dataset_dir: str, members: list[dict[str, Any]], **training: Any) -> dict[str, Any]:
    return {
        "name": "t",
        "data": {"source": dataset_dir, "format": "image_folder"},
        "model": {"architecture": "test_efficientnet", "input_size": 32, "drop_rate": 0.0},
        "training": {"batch_size": 8, "threads": 1, "epochs": 1, "lr": 3e-3, **training},
        "evaluation": {"fail_on_gate": False},
        "export": {"precisions": ["fp32"], "latency_runs": 100, "latency_warmup": 1, "fail_on_gate": False},
        "variants": {"members": members},
    }


def _problems(raw: dict[str, Any]) -> str:
    with pytest.raises(PlanError) as caught:
        validate_plan(raw)
    return str(caught.value)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("model.architecture", "test_vit"),
        ("model.pretrained", "/tmp/w.pt"),
        ("model.input_size", 64),
        ("model.family", "mlp"),
        ("model.num_classes", 4),
        ("training.distributed.nproc_per_node", 2),
    ],
)
def test_members_share_the_architecture_and_image_input(path: str, value: Any) -> None:
    message = _problems(_raw("/data", [{}, {path: value}]))
    assert f"variants.members[1].{path}: members share" in message


def test_an_image_plan_takes_variants_but_not_distributed_training() -> None:
    plan = validate_plan(_raw("/data", MEMBERS))
    assert plan.variants is not None
    message = _problems(_raw("/data", MEMBERS, distributed={"nproc_per_node": 2}))
    assert "training.distributed: an image plan's variant members train one after another" in message
    raw = _raw("/data", MEMBERS)
    raw["retraining"] = {"warm_start": True}
    assert "retraining.warm_start: loads the champion's one model.pt" in _problems(raw)


@dataclass
class Trained:
    folder: Path
    plan: Plan
    dataset_dir: str
    model_dir: str
    metrics: dict[str, float]
    events: list[dict[str, Any]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    folder = tmp_path_factory.mktemp("image-variants")
    images = make_image_folder(folder / "images", per_class=16)
    dataset_dir, model_dir = str(folder / "dataset"), str(folder / "model")
    ingest_data(
        DataSpec(source=str(images), format="image_folder", split={"train": 0.6, "val": 0.2, "test": 0.2}), dataset_dir
    )
    raw = _raw(dataset_dir, MEMBERS, checkpoint={"uri": str(folder / "checkpoints")})
    plan = validate_plan(raw)
    events: list[dict[str, Any]] = []
    logged: list[str] = []
    result = train_model(plan, dataset_dir, model_dir, events.append, lambda m, _: logged.extend(m))
    assert any(name.startswith("member_1_") for name in logged)
    return Trained(folder, plan, dataset_dir, model_dir, result.metrics, events)


def test_members_train_into_their_folders_and_the_root_records_them(trained: Trained) -> None:
    model_dir = Path(trained.model_dir)
    assert not (model_dir / "model.pt").exists()
    for k in (0, 1):
        assert (model_dir / "members" / str(k) / "model.pt").is_file()
        assert (trained.folder / "checkpoints" / f"member_{k}").is_dir()
    info = read_model_info(trained.model_dir)
    assert info.variants is not None
    assert [m.weight for m in info.variants] == [0.5, 0.5]
    for k, member in enumerate(info.variants):
        member_info = read_model_info(f"{trained.model_dir}/members/{k}")
        assert (member.weights_sha256, member.plan_digest) == (member_info.weights_sha256, member_info.plan_digest)
    metrics = trained.metrics
    assert {"member_0_best_val_accuracy", "member_1_best_val_accuracy", "ensemble_val_log_loss"} <= set(metrics)
    assert metrics["best_val_accuracy"] == metrics["ensemble_val_accuracy"]
    assert {event.get("member") for event in trained.events if event.get("event") == "epoch_end"} == {0, 1}
    model, _ = load_trained_model(trained.model_dir)
    assert isinstance(model, VariantEnsemble)
    assert len(model.members) == 2


def test_a_rerun_with_resume_keeps_finished_members(trained: Trained) -> None:
    members = Path(trained.model_dir) / "members"
    before = {k: (members / str(k) / "model.pt").stat().st_mtime_ns for k in (0, 1)}
    events: list[dict[str, Any]] = []
    again = train_model(trained.plan, trained.dataset_dir, trained.model_dir, events.append)
    kept = [event["text"] for event in events if event.get("event") == "message"]
    assert kept == [f"variant member {k} of 2: already trained, kept" for k in (0, 1)]
    assert not [event for event in events if event.get("event") == "epoch_end"]
    assert {k: (members / str(k) / "model.pt").stat().st_mtime_ns for k in (0, 1)} == before
    assert again.metrics["ensemble_val_accuracy"] == trained.metrics["ensemble_val_accuracy"]


def test_a_member_of_another_run_is_refused(trained: Trained, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(trained.model_dir, copy)
    shutil.rmtree(copy / "members" / "1")
    shutil.copytree(copy / "members" / "0", copy / "members" / "1")
    with pytest.raises(ValueError, match=r"members/1: variant member 1 is not the one"):
        load_trained_model(str(copy))


def _member_probabilities(trained: Trained, images: np.ndarray) -> list[np.ndarray]:
    info = read_model_info(trained.model_dir)
    return [
        predict_probabilities(member, images, info.input_size, info.mean, info.std, info.in_chans)
        for member, _ in load_image_members(trained.model_dir, info)
    ]


def test_evaluation_scores_each_member_and_the_ensemble(trained: Trained, tmp_path: Path) -> None:
    result = evaluate_model(trained.plan, trained.model_dir, trained.dataset_dir, str(tmp_path / "eval"))
    metrics = result.metrics
    assert {f"test_member_{k}_{m}" for k in (0, 1) for m in ("accuracy", "log_loss")} <= set(metrics)
    assert list(result.report["ensemble"]["scores"]) == ["0", "1", "ensemble"]
    images, labels = load_dataset(trained.dataset_dir).subset("test")
    members = _member_probabilities(trained, images)
    for k, probabilities in enumerate(members):
        assert metrics[f"test_member_{k}_accuracy"] == pytest.approx(float((probabilities.argmax(1) == labels).mean()))
    mean = (members[0] + members[1]) / 2
    assert metrics["test_accuracy"] == pytest.approx(float((mean.argmax(1) == labels).mean()))
    assert (tmp_path / "eval" / "reference").is_dir()


def test_the_export_ships_one_graph_of_the_members_averaged_probabilities(trained: Trained, tmp_path: Path) -> None:
    result = export_model(trained.plan, trained.model_dir, trained.dataset_dir, str(tmp_path / "export"))
    report = json.loads((tmp_path / "export" / "export_report.json").read_text())
    verification = report["verification"]["variants"]
    assert {"member_0", "member_1", "ensemble"} <= set(verification)
    assert verification["ensemble"]["max_abs_diff"] < 1e-4
    graph_path = tmp_path / "export" / "variants" / "model" / "model_fp32.onnx"
    graph = onnx.load(str(graph_path))
    assert [value.name for value in graph.graph.input] == [INPUT_NAME]
    assert {node.name.split("/", 1)[0] for node in graph.graph.node} == {"member_0", "member_1", "ensemble"}
    info = read_model_info(trained.model_dir)
    images, _ = load_dataset(trained.dataset_dir).subset("test")
    members = _member_probabilities(trained, images)
    feeds = {INPUT_NAME: to_model_input(images, info.input_size, info.mean, info.std, info.in_chans).numpy()}
    logits = run_batched(ort_session(graph_path), feeds)[0]
    ort = np.exp(logits - logits.max(1, keepdims=True))
    ort /= ort.sum(1, keepdims=True)
    np.testing.assert_allclose(ort, (members[0] + members[1]) / 2, atol=1e-4)
    predictor = Predictor.load(result.bundles["model"])
    probabilities = predictor.predict_proba(images)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    assert predictor.predict(images) == [info.classes[k] for k in ort.argmax(1)]  # a temperature keeps the argmax
    tags = variant_ensemble_tags(trained.model_dir)
    assert len(json.loads(tags["rooivalk.variants"])) == 2
    metadata = json.loads(Path(result.bundles["model"], "bundle.json").read_text())["metadata"]
    assert "variant ensemble of 2 timm models" in metadata["architecture"]
