"""rooivalk.steps.retraining: which data a retraining run ingests, warm start from the champion's folder, and
the monitoring reference that follows promotion. (The whole pipeline, with MLflow and kfp.local, is
tests/integration/test_local_pipeline.py.)"""

from pathlib import Path

import pytest
import torch

from rooivalk import storage
from rooivalk.models import create_model
from rooivalk.models.artifact import ModelInfo, save_trained_model
from rooivalk.plan import ModelSpec, Plan, PlanError, load_plan
from rooivalk.steps.retraining import prepare_retraining, refresh_reference, retraining_source
from tests.conftest import tiny_plan_dict

REPO = Path(__file__).resolve().parents[3]


def _plan(**extra: object) -> Plan:
    return Plan.model_validate({**tiny_plan_dict("s3://data/tiny/v1"), **extra})


@pytest.mark.parametrize(
    ("data_uri", "source"),
    [
        ("", "s3://data/tiny/v1"),
        ("s3://data/tiny/v2/_READY", "s3://data/tiny/v2"),
        ("s3://data/tiny/v2/", "s3://data/tiny/v2"),
        ("/mnt/new/batch-7/_READY", "/mnt/new/batch-7"),
    ],
)
def test_retraining_source_is_the_folder_of_the_marker_or_the_plan_source(data_uri: str, source: str) -> None:
    assert retraining_source(data_uri, _plan()) == source


def test_a_bucket_alone_is_refused() -> None:
    with pytest.raises(ValueError, match="names a bucket"):
        retraining_source("s3://data/_READY", _plan())


def _champion(tmp_path: Path, architecture: str = "test_efficientnet") -> str:
    spec = ModelSpec(architecture=architecture, input_size=32, drop_rate=0.0)
    model = create_model(spec, 3)
    info = ModelInfo(
        spec=spec, classes=["a", "b", "c"], input_size=32, in_chans=3, mean=(0.5,), std=(0.5,),
        dataset_version="ds-old", plan_digest="x",
    )  # fmt: skip
    folder = tmp_path / "champion"
    save_trained_model(str(folder), model, info)
    (folder / "registered.txt").write_text("tiny/4\n")
    return str(folder)


def test_warm_start_points_the_model_at_the_champion_weights(tmp_path: Path) -> None:
    champion = _champion(tmp_path)
    prepared = prepare_retraining(_plan(), "s3://data/tiny/v2/_READY", champion, "s3://root/run/champion")
    assert prepared.plan.data.source == "s3://data/tiny/v2"
    assert prepared.plan.single_model.pretrained == "s3://root/run/champion/model.pt"
    assert prepared.warm_started_from == "tiny/4"
    # Those weights load into the plan's model as its starting point, head included.
    model = create_model(prepared.plan.single_model.model_copy(update={"pretrained": f"{champion}/model.pt"}), 3)
    saved = torch.load(f"{champion}/model.pt", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())


def test_warm_start_from_another_architecture_is_refused(tmp_path: Path) -> None:
    champion = _champion(tmp_path, architecture="test_resnet")
    with pytest.raises(ValueError, match="champion is timm/test_resnet"):
        prepare_retraining(_plan(), "", champion)


def test_no_champion_keeps_the_plan_weights() -> None:
    prepared = prepare_retraining(_plan(), "", None)
    assert prepared.plan.single_model.pretrained is None
    assert prepared.summary() == "data s3://data/tiny/v1; no warm start"


def test_warm_start_is_refused_for_multisensor_plans() -> None:
    with pytest.raises(PlanError, match="retraining.warm_start"):
        load_plan(REPO / "pipelines" / "plans" / "counter_drone.yaml", ["retraining.warm_start=true"])


def test_reference_follows_promotion_and_its_profile_is_written_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "report"
    (report / "reference" / "sensors").mkdir(parents=True)
    (report / "reference" / "rows.parquet").write_bytes(b"rows")
    (report / "reference" / "sensors" / "rf.parquet").write_bytes(b"rf")
    (report / "reference" / "profile.json").write_text("{}")
    target = tmp_path / "serving" / "reference"
    plan = _plan(monitoring={"reference_uri": str(target)})

    assert refresh_reference(plan, str(report), promoted=False) is None
    assert not target.exists()
    assert refresh_reference(_plan(), str(report), promoted=True) is None  # no reference_uri: nothing to refresh
    written: list[str] = []
    write_bytes = storage.write_bytes
    monkeypatch.setattr(storage, "write_bytes", lambda uri, data: written.append(str(uri)) or write_bytes(uri, data))
    assert refresh_reference(plan, str(report), promoted=True) == str(target)
    # profile.json marks a complete profile (readers wait for it): it is written after every other file.
    assert [Path(uri).relative_to(target).as_posix() for uri in written] == [
        "rows.parquet", "sensors/rf.parquet", "profile.json"
    ]  # fmt: skip
    assert storage.read_bytes(str(target / "sensors" / "rf.parquet")) == b"rf"
