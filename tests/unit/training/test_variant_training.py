"""A variant ensemble of a tiny sign-language plan (two GRU members, seeds 0 and 1) through training,
evaluation and export: members train into members/<k> and the root's model.json, written last, records
their digests; a rerun with checkpoint resume keeps finished members; a member of another run is refused;
evaluation scores each member and the probability-averaged ensemble (which the gates judge); the export
ships one ONNX graph whose probabilities are the members' PyTorch probabilities averaged, and the
bundle's Predictor reads it as any classifier."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from scipy.special import softmax

from rooivalk.data import ingest_data
from rooivalk.data.datasets import load_array_dataset
from rooivalk.evaluation.array_evaluation import evaluate_array_model
from rooivalk.export import Predictor, export_model
from rooivalk.export.array_export import onnx_feeds
from rooivalk.export.benchmark import ort_session
from rooivalk.export.onnx_export import run_batched
from rooivalk.models.array_artifact import load_array_model, load_variant_members, read_array_model_info
from rooivalk.models.array_inference import array_logits, model_arrays
from rooivalk.models.variant_ensemble import VariantEnsemble
from rooivalk.plan import Plan
from rooivalk.training import train_model
from tests.unit.training.test_array_training import signs_plan

MEMBERS = "variants.members=[{}, {training.seed: 1, training.sequence_augment.probability: 0.8}]"
EXPORT = [
    "evaluation.fail_on_gate=false",
    "export.precisions=[fp32]",
    "export.latency_runs=100",
    "export.latency_warmup=1",
    "export.fail_on_gate=false",
]


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
    folder = tmp_path_factory.mktemp("variants")
    plan = signs_plan(folder, MEMBERS, f"training.checkpoint.uri={folder / 'checkpoints'}", *EXPORT)
    dataset_dir, model_dir = str(folder / "dataset"), str(folder / "model")
    ingest_data(plan.data, dataset_dir)
    events: list[dict[str, Any]] = []
    logged: list[str] = []
    result = train_model(plan, dataset_dir, model_dir, events.append, lambda m, _: logged.extend(m))
    assert any(name.startswith("member_1_") for name in logged)  # per-epoch figures under the member's prefix
    return Trained(folder, plan, dataset_dir, model_dir, result.metrics, events)


def test_members_train_into_their_folders_and_the_root_records_them(trained: Trained) -> None:
    model_dir = Path(trained.model_dir)
    assert not (model_dir / "model.pt").exists()  # the root has no weights of its own
    for k in (0, 1):
        assert (model_dir / "members" / str(k) / "model.pt").is_file()
        assert (trained.folder / "checkpoints" / f"member_{k}").is_dir()
    info = read_array_model_info(trained.model_dir)
    assert info.variants is not None
    assert [m.weight for m in info.variants] == [0.5, 0.5]
    assert info.variants[1].overrides == {"training.seed": 1, "training.sequence_augment.probability": 0.8}
    for k, member in enumerate(info.variants):
        member_info = read_array_model_info(f"{trained.model_dir}/members/{k}")
        assert (member.weights_sha256, member.plan_digest) == (member_info.weights_sha256, member_info.plan_digest)
    assert info.variants[0].plan_digest != info.variants[1].plan_digest != info.plan_digest
    metrics = trained.metrics
    assert {"member_0_best_val_accuracy", "member_1_best_val_accuracy", "ensemble_val_log_loss"} <= set(metrics)
    assert metrics["best_val_accuracy"] == metrics["ensemble_val_accuracy"]
    assert {event.get("member") for event in trained.events if event.get("event") == "epoch_end"} == {0, 1}
    model, _ = load_array_model(trained.model_dir)
    assert isinstance(model, VariantEnsemble)
    assert len(model.members) == 2


def test_a_rerun_with_resume_keeps_finished_members(trained: Trained) -> None:
    before = {k: (Path(trained.model_dir) / "members" / str(k) / "model.pt").stat().st_mtime_ns for k in (0, 1)}
    events: list[dict[str, Any]] = []
    again = train_model(trained.plan, trained.dataset_dir, trained.model_dir, events.append)
    kept = [event["text"] for event in events if event.get("event") == "message"]
    assert kept == [f"variant member {k} of 2: already trained, kept" for k in (0, 1)]
    assert not [event for event in events if event.get("event") == "epoch_end"]
    after = {k: (Path(trained.model_dir) / "members" / str(k) / "model.pt").stat().st_mtime_ns for k in (0, 1)}
    assert after == before
    assert again.metrics["ensemble_val_accuracy"] == trained.metrics["ensemble_val_accuracy"]


def test_a_member_of_another_run_is_refused(trained: Trained, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(trained.model_dir, copy)
    shutil.rmtree(copy / "members" / "1")
    shutil.copytree(copy / "members" / "0", copy / "members" / "1")
    with pytest.raises(ValueError, match=r"members/1: variant member 1 is not the one"):
        load_array_model(str(copy))


def test_evaluation_scores_each_member_and_the_ensemble(trained: Trained, tmp_path: Path) -> None:
    result = evaluate_array_model(trained.plan, trained.model_dir, trained.dataset_dir, str(tmp_path / "eval"))
    metrics = result.metrics
    assert {f"test_member_{k}_{m}" for k in (0, 1) for m in ("accuracy", "log_loss")} <= set(metrics)
    assert list(result.report["ensemble"]["scores"]) == ["0", "1", "ensemble"]
    info = read_array_model_info(trained.model_dir)
    arrays, labels = model_arrays(info, load_array_dataset(trained.dataset_dir), "test")
    members = [softmax(array_logits(m, arrays, 3), axis=1) for m, _ in load_variant_members(trained.model_dir, info)]
    mean = (members[0] + members[1]) / 2
    assert metrics["test_accuracy"] == pytest.approx(float((mean.argmax(1) == labels).mean()))
    assert result.report["ensemble"]["scores"]["ensemble"]["accuracy"] == pytest.approx(metrics["test_accuracy"])
    true_class = mean[np.arange(len(labels)), labels]
    assert metrics["test_ensemble_log_loss"] == pytest.approx(float(-np.log(true_class).mean()))


def test_the_export_ships_one_graph_of_the_members_averaged_probabilities(trained: Trained, tmp_path: Path) -> None:
    result = export_model(trained.plan, trained.model_dir, trained.dataset_dir, str(tmp_path / "export"))
    report = json.loads((tmp_path / "export" / "export_report.json").read_text())
    verification = report["verification"]["variants"]
    assert {"member_0", "member_1", "ensemble"} <= set(verification)
    assert verification["ensemble"]["max_abs_diff"] < 1e-5
    graph_path = tmp_path / "export" / "variants" / "model" / "model_fp32.onnx"
    graph = onnx.load(str(graph_path))
    assert [value.name for value in graph.graph.input] == ["sequences", "lengths"]
    assert {node.name.split("/", 1)[0] for node in graph.graph.node} == {"member_0", "member_1", "ensemble"}
    info = read_array_model_info(trained.model_dir)
    dataset = load_array_dataset(trained.dataset_dir)
    arrays, _ = model_arrays(info, dataset, "test")
    members = [softmax(array_logits(m, arrays, 3), axis=1) for m, _ in load_variant_members(trained.model_dir, info)]
    ort = softmax(run_batched(ort_session(graph_path), onnx_feeds(info, arrays))[0], axis=1)
    np.testing.assert_allclose(ort, (members[0] + members[1]) / 2, atol=1e-5)
    predictor = Predictor.load(result.bundles["model"])
    sequences, lengths, _ = dataset.subset("test")
    raw = [sequence[:length] for sequence, length in zip(sequences, lengths, strict=True)]
    probabilities = predictor.predict_proba(raw)
    assert probabilities.shape == (len(raw), 3)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    assert (
        "variant ensemble of 2 rnn models"
        in json.loads(Path(result.bundles["model"], "bundle.json").read_text())["metadata"]["architecture"]
    )


def test_the_run_report_shows_each_member_beside_the_ensemble() -> None:
    from rooivalk.cli.report_tables import ensemble_section

    evaluation = {"test_accuracy": 0.9, "test_ensemble_log_loss": 0.3, "test_member_0_accuracy": 0.8}
    evaluation |= {"test_member_0_log_loss": 0.5, "test_member_1_accuracy": 0.85, "test_member_1_log_loss": 0.4}
    lines = ensemble_section(evaluation)
    assert lines[:1] == ["## Ensemble"]
    assert "| member 0 | 0.8000 | 0.5000 |" in lines
    assert "| member 1 | 0.8500 | 0.4000 |" in lines
    assert "| **ensemble** | 0.9000 | 0.3000 |" in lines
    assert "| xgboost | 0.7000 | nan |" in ensemble_section({"test_member_xgboost_accuracy": 0.7})
    assert ensemble_section({"test_accuracy": 0.9}) == []
