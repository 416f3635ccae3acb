"""Static checks of the compiled drift-check pipeline: the check, the If on its verdict, and the plan's
training pipeline nested in the branch (running it would train a model; the golden file is in
test_compile.py)."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import components
from typer.testing import CliRunner

from rooivalk.cli import app

PLANS = Path(__file__).resolve().parents[2] / "pipelines" / "plans"


def _compiled(tmp_path: Path, plan: str) -> dict[str, Any]:
    out = tmp_path / f"drift_check_{plan}"
    result = CliRunner().invoke(app, ["compile", str(PLANS / plan), "-o", str(out), "--pipeline", "drift-check"])
    assert result.exit_code == 0, result.output
    assert components.load_component_from_file(str(out)).name == "rooivalk-drift-check"
    return yaml.safe_load(out.read_text())


@pytest.mark.parametrize(
    ("plan", "training", "inner_task"),
    [
        ("counter_drone.yaml", "rooivalk-multisensor", "train-fusion"),
        ("fashion_finetune.yaml", "rooivalk-training", "train-model"),
    ],
)
def test_drift_starts_the_plans_training_pipeline(tmp_path: Path, plan: str, training: str, inner_task: str) -> None:
    spec = _compiled(tmp_path, plan)
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"monitor-drift", "condition-1"}
    branch = root["condition-1"]
    assert branch["taskInfo"]["name"] == "drift-detected"
    assert branch["dependentTasks"] == ["monitor-drift"]
    retrain = branch["inputs"]["parameters"]["pipelinechannel--monitor-drift-retrain"]["taskOutputParameter"]
    assert retrain == {"outputParameterKey": "retrain", "producerTask": "monitor-drift"}
    assert branch["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--monitor-drift-retrain'] == true"
    )
    nested = spec["components"][branch["componentRef"]["name"]]["dag"]["tasks"]
    assert list(nested) == [training]
    assert nested[training]["inputs"]["parameters"]["plan"] == {"componentInputParameter": "pipelinechannel--plan"}
    training_dag = spec["components"][nested[training]["componentRef"]["name"]]["dag"]["tasks"]
    assert {"close-run", "exit-handler-1"} <= set(training_dag)  # the whole training pipeline, exit handler too
    exit_dag = spec["components"][training_dag["exit-handler-1"]["componentRef"]["name"]]["dag"]["tasks"]
    assert {"open-run", inner_task} <= set(exit_dag)


def test_drift_check_parameters_and_outputs(tmp_path: Path) -> None:
    spec = _compiled(tmp_path, "counter_drone.yaml")
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert "defaultValue" not in parameters["current_uri"]  # required at submit time
    assert parameters["reference_uri"]["defaultValue"] == ""  # empty: the plan's monitoring.reference_uri
    assert parameters["plan"]["defaultValue"]["sensors"].keys() == {"optical", "rf", "radar", "acoustic"}
    check = spec["components"]["comp-monitor-drift"]["outputDefinitions"]
    artifacts = {name: value["artifactType"]["schemaTitle"] for name, value in check["artifacts"].items()}
    assert artifacts == {"report": "system.Artifact", "html": "system.HTML", "metrics": "system.Metrics"}
    assert check["parameters"] == {"retrain": {"parameterType": "BOOLEAN"}, "reason": {"parameterType": "STRING"}}
    executor = spec["deploymentSpec"]["executors"]["exec-monitor-drift"]["container"]
    assert executor["image"].startswith("ghcr.io/rooivalk/rooivalk-cpu:")
    assert "pip install" not in yaml.safe_dump(executor)


def test_unknown_pipeline_is_refused(tmp_path: Path) -> None:
    args = ["compile", str(PLANS / "counter_drone.yaml"), "-o", str(tmp_path / "x.yaml"), "--pipeline", "drift"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    text = " ".join(result.output.replace("│", " ").split())  # rich boxes and wraps the message
    assert "'drift' is not one of training, retraining, drift-check" in text
