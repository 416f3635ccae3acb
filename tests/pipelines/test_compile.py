"""Golden-file test of the compiled training pipeline (KFP SDK style: sdkVersion stripped).

After an intended change to the pipeline or a component, regenerate with `make golden`.
"""

import os
import re
from pathlib import Path

import yaml
from kfp import components
from typer.testing import CliRunner

from rooivalk.cli import app

REPO = Path(__file__).resolve().parents[2]
PLAN = REPO / "pipelines" / "plans" / "fashion_finetune.yaml"
GOLDEN = Path(__file__).parent / "golden" / "fashion_finetune.yaml"


def _normalized(text: str) -> str:
    # The leading comment block prints the plan from an unordered protobuf Struct: drop it.
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return re.sub(r"sdkVersion: kfp-[\w.]+", "sdkVersion: kfp-<stripped>", body) + "\n"


def _compile(tmp_path: Path) -> Path:
    out = tmp_path / "pipeline.yaml"
    result = CliRunner().invoke(app, ["compile", str(PLAN), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_compiled_pipeline_matches_golden(tmp_path: Path) -> None:
    compiled = _normalized(_compile(tmp_path).read_text())
    if os.environ.get("ROOIVALK_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(compiled)
    assert compiled == GOLDEN.read_text(), "compiled pipeline changed: review, then `make golden`"


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
