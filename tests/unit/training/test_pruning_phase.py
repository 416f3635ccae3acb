"""training.pruning on the engine: a table plan's MLP trains, is pruned, fine-tuned as the `prune` stage and
saved pruned (masks folded into zeros, or smaller layers that load back); a rerun on the same checkpoints
re-prunes the same weights and resumes the finished phase to the same model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from rooivalk.data import ingest_data
from rooivalk.models.array_artifact import load_array_model
from rooivalk.plan import Plan, load_plan
from rooivalk.training import train_model

PLANS = Path(__file__).resolve().parents[3] / "pipelines" / "plans"


def attribution_plan(folder: Path, *overrides: str) -> Plan:
    return load_plan(
        PLANS / "attribution.yaml",
        [
            "training.threads=1",
            "evaluation.gates=[]",
            f"data.source={folder / 'events.parquet'}",
            "data.simulate.count=120",
            "model.architecture=32-16",
            "training.epochs=2",
            "ensemble=null",
            "training.pruning.amount=0.5",
            "training.pruning.epochs=2",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("attribution")
    dataset_dir = str(folder / "dataset")
    ingest_data(attribution_plan(folder).data, dataset_dir)
    return folder, dataset_dir


def _rerun_gives_the_same_model(folder: Path, dataset_dir: str, overrides: list[str], first: str) -> None:
    """A second run on the same checkpoints: stages and phase resume finished, the model saved is the same."""
    events: list[dict[str, Any]] = []
    plan = attribution_plan(folder, *overrides)
    again = train_model(plan, dataset_dir, str(folder / f"{first}-again"), progress=events.append)
    assert again.resumed_from is not None
    resumed = [e["text"] for e in events if e.get("event") == "message" and "resumed from" in e["text"]]
    assert any("/prune/" in text for text in resumed)  # the phase's own checkpoint, masks or smaller layers
    model, info = load_array_model(str(folder / first))
    rerun, rerun_info = load_array_model(str(folder / f"{first}-again"))
    assert rerun_info.structure == info.structure
    for key, value in model.state_dict().items():
        assert torch.equal(value, rerun.state_dict()[key]), key


def test_magnitude_pruning_fine_tunes_as_a_stage_and_saves_a_sparse_model(dataset: tuple[Path, str]) -> None:
    folder, dataset_dir = dataset
    overrides = ["training.pruning.method=magnitude", f"training.checkpoint.uri={folder / 'magnitude-checkpoints'}"]
    result = train_model(attribution_plan(folder, *overrides), dataset_dir, str(folder / "magnitude"))
    assert [stage["stage"] for stage in result.stages][-1] == "prune"
    assert result.stages[-1]["epochs"] == 2
    assert result.metrics["prune_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert result.metrics["best_epoch"] > 2  # what ships is the phase's best epoch, after the stage's 2
    model, info = load_array_model(str(folder / "magnitude"))
    assert info.structure is None  # shapes as the family builds them
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.5, abs=0.01)
    _rerun_gives_the_same_model(folder, dataset_dir, overrides, "magnitude")


def test_channel_pruning_saves_smaller_layers_and_a_rerun_resumes_the_phase(dataset: tuple[Path, str]) -> None:
    folder, dataset_dir = dataset
    checkpoints = folder / "checkpoints"
    overrides = ["training.pruning.method=channels", f"training.checkpoint.uri={checkpoints}"]
    result = train_model(attribution_plan(folder, *overrides), dataset_dir, str(folder / "channels"))
    assert [stage["stage"] for stage in result.stages][-1] == "prune"
    assert result.metrics["prune_parameter_ratio"] < 0.6
    model, info = load_array_model(str(folder / "channels"))
    assert info.structure is not None
    assert [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)] == [16, 8, 4]
    assert (checkpoints / "prune").is_dir()  # the phase checkpoints apart from the stages
    _rerun_gives_the_same_model(folder, dataset_dir, overrides, "channels")
