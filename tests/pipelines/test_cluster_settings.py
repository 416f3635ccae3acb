"""The plan's `cluster` section in compiled pipelines: what kfp-kubernetes writes into the IR's
platform spec and the container resources, checked on the cluster reference plan. (No KFP or
Kubernetes API server can run here; the IR is what a cluster's KFP backend turns into pods.)"""

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from rooivalk.cli import app
from rooivalk.plan import PlanError, load_plan
from rooivalk_kfp.pipelines.kubernetes import STEP_KIND_OF_COMPONENT

REPO = Path(__file__).resolve().parents[2]
CLUSTER_PLAN = REPO / "pipelines" / "plans" / "counter_drone_cluster.yaml"
GPU_NODE = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def _compile(tmp_path: Path, pipeline: str, *overrides: str) -> tuple[dict[str, Any], dict[str, Any]]:
    out = tmp_path / f"{pipeline}.yaml"
    args = ["compile", str(CLUSTER_PLAN), "-o", str(out), "--pipeline", pipeline]
    for override in overrides:
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task of every DAG (root, exit handler, loops, nested pipelines), by task name."""
    found: dict[str, dict[str, Any]] = {}
    for component in [spec["root"], *spec["components"].values()]:
        found.update(component.get("dag", {}).get("tasks", {}))
    return found


@pytest.mark.parametrize("pipeline", ["training", "retraining"])
def test_every_step_gets_requests_limits_security_and_secrets(tmp_path: Path, pipeline: str) -> None:
    spec, executors = _compile(tmp_path, pipeline)
    containers = spec["deploymentSpec"]["executors"]
    assert set(executors) == set(containers)  # no step left with KFP's defaults
    for name, executor in containers.items():
        resources = executor["container"]["resources"]
        for key in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"):
            assert key in resources, f"{name}: {key}"
        platform = executors[name]
        assert platform["securityContext"] == {"runAsUser": "10001", "runAsGroup": "10001", "runAsNonRoot": True}
        secret_env = {(s["secretName"], s["keyToEnv"][0]["envVar"]) for s in platform["secretAsEnv"]}
        assert secret_env == {("rooivalk-s3", "AWS_ACCESS_KEY_ID"), ("rooivalk-s3", "AWS_SECRET_ACCESS_KEY")}, name
        env = {e["name"]: e["value"] for e in executor["container"].get("env", [])}
        assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
        assert "AWS_SECRET_ACCESS_KEY" not in env  # credentials only through the Secret
    assert spec["defaultPipelineRoot"] == "s3://rooivalk-pipelines/counter-drone"


def test_gpu_steps_request_gpus_on_gpu_nodes_with_shm_and_other_steps_do_not(tmp_path: Path) -> None:
    spec, executors = _compile(tmp_path, "training")
    containers = spec["deploymentSpec"]["executors"]
    gpu_steps = {"exec-train-sensor", "exec-train-fusion", "exec-cache-features", "exec-export-system"}
    for name, executor in containers.items():
        accelerator = executor["container"]["resources"].get("accelerator")
        platform = executors[name]
        if name in gpu_steps:
            assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("nvidia.com/gpu", "1"), name
            assert platform["nodeSelector"]["labels"] == GPU_NODE, name
            assert platform["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
            assert executor["container"]["image"].startswith("ghcr.io/rooivalk/rooivalk-gpu:")
        else:
            assert accelerator is None, name
            assert not {"nodeSelector", "tolerations"} & set(platform), name
    shm = executors["exec-train-sensor"]["emptyDirMounts"]
    assert shm == [{"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "16Gi", "volumeName": "dshm"}]
    train = containers["exec-train-sensor"]["container"]["resources"]
    assert (train["resourceCpuRequest"], train["resourceMemoryLimit"]) == ("8", "96Gi")
    assert executors["exec-train-sensor"]["activeDeadlineSeconds"] == "43200"


def test_retries_on_idempotent_steps_only(tmp_path: Path) -> None:
    spec, _ = _compile(tmp_path, "retraining")
    tasks = _tasks(spec)
    retries = {name: task.get("retryPolicy", {}).get("maxRetryCount", 0) for name, task in tasks.items()}
    assert (retries["train-sensor"], retries["train-fusion"]) == (3, 3)
    for name in ("ingest-events", "cache-features", "evaluate-system", "export-system"):
        assert retries[name] == 2, name
    for name in ("register-system", "open-run", "close-run", "prepare-retraining"):
        assert retries[name] == 0, name  # a retry could register twice or move aliases twice


def test_feature_cache_pvc_image_registry_and_pull_secrets(tmp_path: Path) -> None:
    spec, executors = _compile(
        tmp_path,
        "training",
        "cluster.feature_cache_volume.claim=feature-cache",
        "cluster.feature_cache_volume.mount_path=/cache",
        "cluster.image_registry=registry.internal:5000/mirror",
        "cluster.image_pull_secrets=[mirror-pull]",
    )
    mounted = {name for name, platform in executors.items() if "pvcMount" in platform}
    assert mounted == {"exec-cache-features", "exec-train-sensor", "exec-train-fusion", "exec-evaluate-system"}
    assert executors["exec-cache-features"]["pvcMount"][0]["mountPath"] == "/cache"
    for name, executor in spec["deploymentSpec"]["executors"].items():
        assert executor["container"]["image"].startswith("registry.internal:5000/mirror/rooivalk-"), name
        assert [s["secretName"] for s in executors[name]["imagePullSecret"]] == ["mirror-pull"], name


def test_every_component_has_a_step_kind() -> None:
    # A new component must say what it needs from a node; compile fails without it (see configure_tasks).
    components = {path.stem.replace("_", "-") for path in (REPO / "components").glob("*.py")}
    components -= {"--init--", "images", "tracking-runs"}
    assert components <= set(STEP_KIND_OF_COMPONENT), components - set(STEP_KIND_OF_COMPONENT)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cluster.steps.register.retries=2", "steps.register.retries"),
        ("cluster.steps.train.memory_limit=lots", "not a Kubernetes quantity"),
        ("cluster.env.AWS_SECRET_ACCESS_KEY=x", "cluster.secrets"),
        ("cluster.steps.trian.gpus=1", "cluster.steps.trian"),
    ],
)
def test_bad_cluster_settings_fail_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(PlanError, match=message.replace(".", r"\.")):
        load_plan(CLUSTER_PLAN, [override])
