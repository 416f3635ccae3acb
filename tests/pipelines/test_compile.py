"""Golden-file tests of the compiled pipelines, KFP SDK style: every document of the compiled YAML is
parsed and compared with its golden file, `sdkVersion` removed, so neither formatting nor a KFP
version bump matters. On a difference the test prints a unified diff of the two, dumped the same way.

The goldens are compiled from the minimal plans in golden/plans/ (single model, multi-sensor, and
multi-sensor with every `cluster` setting), one per pipeline shape, not from the example plans, so
tuning a demo does not rewrite them; `test_example_plans_compile` checks the example plans. Two
substitutions keep the goldens small:
- The `plan` parameter's default value (the whole resolved plan, with every default) becomes
  PLAN_PLACEHOLDER. A plan reaches the IR only through that default and through what the pipeline
  builders read from it (sensors, cluster, pipeline_root), so a new plan default changes no golden
  file (`test_a_new_plan_default_changes_no_golden`); `test_example_plans_compile` checks the default
  itself against the resolved plan.
- Each component is written once, in golden/components.yaml under its function's name: its interface
  (the `comp-*` entry: inputs, outputs) and its executor's `command` (KFP's bootstrap and the function's
  source: the code the pods run). A pipeline's golden names it there and keeps the rest: the DAGs
  (wiring), each executor's image, args, resources and env, the platform spec, the pipeline root.

After an intended change to a pipeline or a component, `make golden` regenerates them; review the diff.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import components
from typer.testing import CliRunner

from rooivalk.cli import app
from rooivalk.cli.common import CLUSTER_TRACKING_URI
from rooivalk.cli.compile import PIPELINES, with_tracking_default
from rooivalk.plan import Plan, load_plan

REPO = Path(__file__).resolve().parents[2]
PLANS = REPO / "pipelines" / "plans"
PLAN = PLANS / "fashion_finetune.yaml"
GOLDEN_DIR = Path(__file__).parent / "golden"
GOLDEN_PLANS = GOLDEN_DIR / "plans"
COMPONENTS = GOLDEN_DIR / "components.yaml"
PLAN_PLACEHOLDER = "<the resolved plan: not compared, see tests/pipelines/test_compile.py>"
UPDATE = bool(os.environ.get("ROOIVALK_UPDATE_GOLDEN"))

# golden file -> (minimal plan in golden/plans, pipeline)
GOLDENS = {
    "training_single_model.yaml": ("single_model.yaml", "training"),
    "retraining_single_model.yaml": ("single_model.yaml", "retraining"),
    "training_multisensor.yaml": ("multisensor.yaml", "training"),
    "retraining_multisensor.yaml": ("multisensor.yaml", "retraining"),
    "drift_check_multisensor.yaml": ("multisensor.yaml", "drift-check"),
    "training_cluster.yaml": ("cluster.yaml", "training"),
    "search_cluster.yaml": ("search.yaml", "training"),
}

Documents = list[dict[str, Any]]  # the pipeline spec [+ the Kubernetes platform spec]


def _compile(tmp_path: Path, plan: Path = PLAN, pipeline: str = "training") -> Path:
    out = tmp_path / "pipeline.yaml"
    result = CliRunner().invoke(app, ["compile", str(plan), "-o", str(out), "--pipeline", pipeline])
    assert result.exit_code == 0, result.output
    return out


def _compile_documents(tmp_path: Path, golden: str) -> Documents:
    plan, pipeline = GOLDENS[golden]
    return list(yaml.safe_load_all(_compile(tmp_path, GOLDEN_PLANS / plan, pipeline).read_text()))


def _normalized(documents: Documents) -> tuple[Documents, dict[str, Any]]:
    """The documents as their golden file holds them, and their components (by function name) as
    golden/components.yaml does."""
    documents = copy.deepcopy(documents)
    spec = documents[0]
    spec.pop("sdkVersion")
    spec["root"]["inputDefinitions"]["parameters"]["plan"]["defaultValue"] = PLAN_PLACEHOLDER
    executors = spec["deploymentSpec"]["executors"]
    shared = {}
    for name, component in spec["components"].items():
        container = executors.get(component.get("executorLabel"), {}).get("container", {})
        args = container.get("args", [])
        if "--function_to_execute" not in args:
            continue  # a DAG (nested pipeline, exit handler, loop, condition): wiring, kept in place
        function = args[args.index("--function_to_execute") + 1]
        shared[function] = {"component": component, "command": container["command"]}
        spec["components"][name] = container["command"] = f"<{COMPONENTS.name}: {function}>"
    return documents, shared


class _GoldenDumper(yaml.SafeDumper):
    """Block scalars for multi-line strings, so component source reads as code in goldens and diffs."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_GoldenDumper.add_representer(str, _represent_str)


def _dump(documents: list[Any]) -> str:
    return yaml.dump_all(documents, Dumper=_GoldenDumper, sort_keys=True, width=120)


def _golden_diff(path: Path, documents: list[Any]) -> str:
    """Empty when the documents equal the golden file's (parsed), else a unified diff of the two."""
    golden = list(yaml.safe_load_all(path.read_text()))
    if documents == golden:
        return ""
    diff = difflib.unified_diff(
        _dump(golden).splitlines(), _dump(documents).splitlines(), f"{path.name} (golden)", "compiled", lineterm=""
    )
    return f"{path.name} differs from the compiled pipeline; review, then `make golden`:\n" + "\n".join(diff)


def _check_golden(path: Path, documents: list[Any], source: str) -> None:
    """Compare with the golden file, or write it under `make golden`."""
    if UPDATE:
        header = f"# Generated by `make golden` from {source}; compared as parsed YAML (test_compile.py).\n"
        path.write_text(header + _dump(documents))
    elif diff := _golden_diff(path, documents):
        pytest.fail(diff, pytrace=False)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Documents]:
    """Every golden pipeline, compiled once for the module."""
    return {golden: _compile_documents(tmp_path_factory.mktemp(golden), golden) for golden in GOLDENS}


@pytest.mark.parametrize("golden", list(GOLDENS))
def test_compiled_pipeline_matches_golden(compiled: dict[str, Documents], golden: str) -> None:
    plan, pipeline = GOLDENS[golden]
    documents, _ = _normalized(compiled[golden])
    _check_golden(GOLDEN_DIR / golden, documents, f"golden/plans/{plan} (--pipeline {pipeline})")


def test_components_match_golden(compiled: dict[str, Documents]) -> None:
    shared: dict[str, Any] = {}
    for golden, documents in compiled.items():
        for function, component in _normalized(documents)[1].items():
            assert shared.setdefault(function, component) == component, f"{function} differs in {golden}"
    _check_golden(COMPONENTS, [dict(sorted(shared.items()))], "the golden pipelines' components")


def _with_new_defaults(parameter: Any) -> Any:
    """The parameter with a new key in every mapping, as a new default in any plan section would add."""
    if isinstance(parameter, dict):
        return {**{key: _with_new_defaults(value) for key, value in parameter.items()}, "new_default": 1}
    if isinstance(parameter, list):
        return [_with_new_defaults(item) for item in parameter]
    return parameter


def test_a_new_plan_default_changes_no_golden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new field with a default in any plan section (e.g. TrainingSpec) changes the resolved plan that
    `compile` passes as the plan parameter's default: here every mapping of it gains a key, and every
    golden still matches. Checked by hand too: a new TrainingSpec field in a copy of src/ left the
    golden tests passing (run with PYTHONPATH=<copy>)."""
    if UPDATE:
        pytest.skip("`make golden` is rewriting the goldens")
    to_parameter: Callable[[Plan], dict[str, Any]] = Plan.to_parameter
    monkeypatch.setattr(Plan, "to_parameter", lambda plan: _with_new_defaults(to_parameter(plan)))
    diffs = []
    for golden in GOLDENS:
        compiled = _compile_documents(tmp_path, golden)
        assert compiled[0]["root"]["inputDefinitions"]["parameters"]["plan"]["defaultValue"]["new_default"] == 1
        diffs.append(_golden_diff(GOLDEN_DIR / golden, _normalized(compiled)[0]))
    if any(diffs):
        pytest.fail("\n".join(diff for diff in diffs if diff), pytrace=False)


def _example_plans() -> Iterator[tuple[str, str]]:
    for plan in sorted(PLANS.glob("*.yaml")):
        if "search" in yaml.safe_load(plan.read_text()):
            continue  # `rooivalk search` runs it (tests/integration/test_search_plans.py); sqlite: no cluster
        for pipeline in PIPELINES:
            yield plan.name, pipeline


def test_a_search_plan_compiles_to_worker_pods_on_a_shared_study_or_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.yaml"
    # sqlite (the example plan's default) is one machine's: worker pods need a database they all reach.
    result = CliRunner().invoke(app, ["compile", str(PLANS / "sign_language_search.yaml"), "-o", str(out)])
    assert result.exit_code == 2
    assert "search.storage: a search on a cluster needs a database every worker pod reaches" in result.output
    assert not out.exists()
    spec = next(yaml.safe_load_all(_compile(tmp_path, GOLDEN_PLANS / "search.yaml").read_text()))
    assert spec["pipelineInfo"]["name"] == "rooivalk-search"
    dag = spec["components"][spec["root"]["dag"]["tasks"]["exit-handler-1"]["componentRef"]["name"]]["dag"]
    loop = next(task for name, task in dag["tasks"].items() if name.startswith("for-loop"))
    assert loop["parameterIterator"]["items"]["raw"] == "[0, 1, 2]"  # search.workers pods
    assert loop["iteratorPolicy"]["parallelismLimit"] == 3
    loop_name = next(name for name in dag["tasks"] if name.startswith("for-loop"))
    assert loop_name in dag["tasks"]["search-report"]["dependentTasks"]  # after every worker
    result = CliRunner().invoke(
        app, ["compile", str(GOLDEN_PLANS / "search.yaml"), "-o", str(out), "--pipeline", "retraining"]
    )
    assert result.exit_code == 2
    assert "compiles to its search pipeline" in result.output


@pytest.mark.parametrize(("plan", "pipeline"), list(_example_plans()))
def test_example_plans_compile(tmp_path: Path, plan: str, pipeline: str) -> None:
    """Every example plan compiles to a pipeline KFP loads, with the resolved plan as its default."""
    out = _compile(tmp_path, PLANS / plan, pipeline)
    assert components.load_component_from_file(str(out)) is not None
    spec = next(yaml.safe_load_all(out.read_text()))
    resolved = with_tracking_default(load_plan(PLANS / plan), CLUSTER_TRACKING_URI)
    assert spec["root"]["inputDefinitions"]["parameters"]["plan"]["defaultValue"] == resolved.to_parameter()
    assert "sdkVersion" in spec  # what _normalized() removes is there to remove


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
