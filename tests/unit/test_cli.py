import json
from pathlib import Path

from typer.testing import CliRunner

from rooivalk.cli import app

REPO = Path(__file__).resolve().parents[2]
FASHION = str(REPO / "pipelines" / "plans" / "fashion_finetune.yaml")
runner = CliRunner()


def test_validate_accepts_the_shipped_plan() -> None:
    result = runner.invoke(app, ["validate", FASHION])
    assert result.exit_code == 0, result.output
    assert "fashion-finetune" in result.output


def test_stage_naming_a_missing_group_fails_validation_listing_the_groups() -> None:
    stages = "training.stages=[{name: top, epochs: 1, train: [blocks.9], lr: {backbone: 0.001}}]"
    # The plan's budget_seconds sizes no stage of these (none runs seconds: rest), so it goes too.
    result = runner.invoke(app, ["validate", FASHION, "--set", stages, "--set", "training.budget_seconds=null"])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "training.stages[top].train: unknown layer group 'blocks.9'" in message
    assert "'blocks.6', 'head'" in message


def test_groups_prints_names_and_parameter_counts() -> None:
    result = runner.invoke(app, ["groups", FASHION, "--set", "model.num_classes=10"])
    assert result.exit_code == 0, result.output
    for name in ("stem", "blocks.0", "blocks.6", "head"):
        assert name in result.output
    assert "12,810" in result.output  # the 10-class head: 1280 x 10 + 10


def test_groups_of_a_multi_sensor_plan_are_listed_per_sensor() -> None:
    plan = str(REPO / "pipelines" / "plans" / "counter_drone.yaml")
    result = runner.invoke(app, ["groups", plan])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    for sensor in ("optical", "rf", "radar", "acoustic"):
        assert f"sensors.{sensor}:" in output
    assert "fusion: groups `fusion` and `head`" in output


def test_schema_is_json_schema_of_the_plan() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["title"] == "Plan"
    assert "TrainingSpec" in schema["$defs"]


def test_report_renders_a_summary(tmp_path: Path) -> None:
    summary = REPO / "docs" / "results" / "fashion_finetune" / "fashion_finetune_summary.json"
    out = tmp_path / "report.md"
    result = runner.invoke(app, ["report", str(summary), "-o", str(out), "--command", "make demo"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "Reproduce: `make demo`" in text
    assert "| head |" in text
    assert "ONNX Runtime INT8" in text


def test_lr_find_ingests_the_plans_data_and_writes_its_plot(tmp_path: Path) -> None:
    import yaml

    from tests.conftest import make_image_folder, tiny_plan_dict

    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(tiny_plan_dict(str(make_image_folder(tmp_path / "images", per_class=12)))))
    out = tmp_path / "lr"
    result = runner.invoke(app, ["lr-find", str(plan_path), "-o", str(out), "--steps", "20", "--end", "10"])
    assert result.exit_code == 0, result.output
    found = json.loads((out / "lr_find.json").read_text())
    assert found["stage"] == "full"
    assert len(found["lrs"]) == len(found["smoothed"]) <= 20
    assert (out / "lr_find.png").stat().st_size > 0
    assert (out / "dataset" / "dataset.json").is_file()  # ingested once, reused by a rerun
    assert "suggested top LR" in " ".join(result.output.split())
    bad = runner.invoke(app, ["lr-find", str(plan_path), "-o", str(out), "--stage", "nope"])
    assert bad.exit_code == 2
    assert "the plan's stages are ['full']" in " ".join(bad.output.split())


COUNTER_DRONE = Path(__file__).resolve().parents[2] / "pipelines" / "plans" / "counter_drone.yaml"


def test_validate_checks_every_sensor_models_stages() -> None:
    result = runner.invoke(app, ["validate", str(COUNTER_DRONE)])
    assert result.exit_code == 0, result.output
    assert "acoustic acoustic_crepe/tiny" in result.output
    stages = "sensors.acoustic.training.stages=[{name: x, epochs: 1, train: [layer9], lr: {head: 0.001}}]"
    bad = runner.invoke(app, ["validate", str(COUNTER_DRONE), "--set", stages])
    assert bad.exit_code == 2
    assert "sensors.acoustic.training.stages[x].train: unknown layer group 'layer9'" in bad.output


def test_report_renders_a_multisensor_run(tmp_path: Path) -> None:
    """A counter-drone run's summary (a real `make demo`-plan run, kept in docs/results) renders the
    system report: every sensor's stages, the fusion, degraded mode, the shipped variants and gates."""
    summary = REPO / "docs" / "results" / "counter_drone" / "repeats" / "repeat_summary.json"
    out = tmp_path / "report.md"
    result = runner.invoke(app, ["report", str(summary), "-o", str(out), "--command", "make demo"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    metrics = json.loads(summary.read_text())["steps"]["evaluate_system"]["metrics"]
    assert f"| **fusion** | **{100 * metrics['fusion_test_accuracy']:.1f}%** |" in text
    assert f"worst {100 * metrics['fusion_one_missing_worst']:.1f}%" in text
    for sensor in ("optical", "rf", "radar", "acoustic"):
        assert f"| {sensor} alone |" in text
        assert f"| {sensor} | " in text  # its training stages and its shipped variant
    assert "| optical | all | " in text  # the image task's stage record
    assert "| acoustic | top | " in text  # a sensor stage record of the older summary format
    assert "- fusion_one_missing_mean = " in text


def test_report_names_the_steps_of_a_summary_it_cannot_render(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"plan": "p", "status": "failed", "steps": {"ingest": {"status": "failed"}}}))
    result = runner.invoke(app, ["report", str(summary), "-o", str(tmp_path / "r.md")])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert f"{summary}: summary.json of plan 'p' (status 'failed')" in message
    assert "its steps: ['ingest']" in message
    assert not (tmp_path / "r.md").exists()
