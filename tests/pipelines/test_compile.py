"""Golden-file tests of the compiled pipelines (KFP SDK style: sdkVersion stripped).

After an intended change to the pipeline or a component, regenerate with `make golden`.
"""

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from kfp import components
from typer.testing import CliRunner

from rooivalk.cli import app

REPO = Path(__file__).resolve().parents[2]
PLANS = REPO / "pipelines" / "plans"
PLAN = PLANS / "fashion_finetune.yaml"
GOLDEN_DIR = Path(__file__).parent / "golden"


def _normalized(text: str) -> str:
    # The leading comment block prints the plan from an unordered protobuf Struct: drop it.
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return re.sub(r"sdkVersion: kfp-[\w.]+", "sdkVersion: kfp-<stripped>", body) + "\n"


def _compile(tmp_path: Path, plan: Path = PLAN, pipeline: str = "training") -> Path:
    out = tmp_path / "pipeline.yaml"
    result = CliRunner().invoke(app, ["compile", str(plan), "-o", str(out), "--pipeline", pipeline])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize(
    ("plan", "pipeline", "golden_name"),
    [
        ("fashion_finetune.yaml", "training", "fashion_finetune.yaml"),
        ("counter_drone.yaml", "training", "counter_drone.yaml"),
        ("counter_drone.yaml", "drift-check", "drift_check_counter_drone.yaml"),
        ("fashion_finetune.yaml", "retraining", "retraining_fashion_finetune.yaml"),
        ("counter_drone_cluster.yaml", "training", "counter_drone_cluster.yaml"),
        ("counter_drone_cluster.yaml", "retraining", "retraining_counter_drone_cluster.yaml"),
    ],
)
def test_compiled_pipeline_matches_golden(tmp_path: Path, plan: str, pipeline: str, golden_name: str) -> None:
    compiled = _normalized(_compile(tmp_path, PLANS / plan, pipeline).read_text())
    golden = GOLDEN_DIR / golden_name
    if os.environ.get("ROOIVALK_UPDATE_GOLDEN"):
        GOLDEN_DIR.mkdir(exist_ok=True)
        golden.write_text(compiled)
    assert compiled == golden.read_text(), "compiled pipeline changed: review, then `make golden`"


def test_multisensor_pipeline_fans_out_per_sensor_and_passes_the_feature_key(tmp_path: Path) -> None:
    spec = yaml.safe_load(_compile(tmp_path, PLANS / "counter_drone.yaml").read_text())
    assert spec["pipelineInfo"]["name"] == "rooivalk-multisensor"
    exit_dag = spec["components"][spec["root"]["dag"]["tasks"]["exit-handler-1"]["componentRef"]["name"]]["dag"]
    inner = exit_dag["tasks"]
    loop = next(task for name, task in inner.items() if name.startswith("for-loop"))
    assert json.loads(loop["parameterIterator"]["items"]["raw"]) == ["optical", "rf", "radar", "acoustic"]
    assert "iteratorPolicy" not in loop  # no parallelism limit on a cluster: every sensor trains at once
    fusion_inputs = inner["train-fusion"]["inputs"]["parameters"]["features_key"]["taskOutputParameter"]
    assert fusion_inputs == {"outputParameterKey": "Output", "producerTask": "cache-features"}
    assert "cache-features" in inner["train-fusion"]["dependentTasks"]
    assert set(inner["export-system"]["dependentTasks"]) >= {"evaluate-system", "train-fusion"}
    closing = spec["root"]["dag"]["tasks"]["close-run"]["inputs"]["parameters"]["expected_steps"]
    steps = closing["runtimeValue"]["constant"]
    assert steps[1:5] == [f"train_sensor_{s}" for s in ("optical", "rf", "radar", "acoustic")]


def test_kfp_loader_accepts_compiled_pipeline(tmp_path: Path) -> None:
    pipeline = components.load_component_from_file(str(_compile(tmp_path)))
    assert pipeline.name == "rooivalk-training"
    spec = yaml.safe_load(_compile(tmp_path).read_text())
    tasks = spec["root"]["dag"]["tasks"]["exit-handler-1"]
    assert spec["root"]["dag"]["tasks"]["close-run"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    inner = spec["components"][tasks["componentRef"]["name"]]["dag"]["tasks"]
    assert {"open-run", "ingest-data", "train-model", "evaluate-model", "export-model", "register-model"} <= set(inner)
    plan_default = spec["root"]["inputDefinitions"]["parameters"]["plan"]["defaultValue"]
    assert plan_default["model"]["architecture"] == "tf_efficientnet_lite0"
    assert plan_default["tracking"]["uri"] == "http://rooivalk-mlflow:5000"


def test_components_do_not_install_kfp_at_runtime(tmp_path: Path) -> None:
    text = _compile(tmp_path).read_text()
    assert "pip install" not in text  # images ship kfp and rooivalk; nothing is installed in pods
    assert "ghcr.io/rooivalk/rooivalk-cpu:" in text


def test_plan_pipeline_root_becomes_the_compiled_default(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.yaml"
    args = ["compile", str(PLAN), "-o", str(out), "--set", "pipeline_root=s3://bucket/pipelines"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load(out.read_text())
    assert spec["defaultPipelineRoot"] == "s3://bucket/pipelines"
    assert components.load_component_from_file(str(out)) is not None  # still a valid KFP pipeline
