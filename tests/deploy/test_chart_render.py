"""The chart lints and renders with each values file, the kustomize overlays render and equal the chart's
render, the checked-in manifests are in sync with the chart, and the values schema refuses misspelled
keys. (Strict CRD schemas, security rules and cross-references: the other modules of tests/deploy.)"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from rooivalk_kfp.components.images import CPU_IMAGE
from tests.scripts import load_script
from tests.unit.monitoring._tools import run, tool

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "rooivalk"
VALUES_FILES = ["values.yaml", "values-dev.yaml", "values-prod.yaml"]
OVERLAYS = ["dev", "prod"]

Doc = dict[str, Any]


def helm_template(*args: str) -> list[Doc]:
    result = run(tool("helm"), "template", "rooivalk", str(CHART), "--namespace", "rooivalk", *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def kustomize(directory: str) -> list[Doc]:
    """`kubectl kustomize manifests/<directory>`, as documents."""
    result = run(tool("kubectl"), "kustomize", str(REPO / "manifests" / directory))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, sorted((doc["kind"], doc["metadata"]["name"]) for doc in docs)
    return matches[0]


@pytest.fixture(scope="module")
def generate() -> ModuleType:
    """manifests/generate.py, imported from its path (it is a script, not a package module)."""
    return load_script(REPO / "manifests" / "generate.py", "manifests_generate")


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_helm_lint_strict(values_file: str) -> None:
    result = run(tool("helm"), "lint", "--strict", str(CHART), "-f", str(CHART / values_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_helm_template_renders_each_values_file(values_file: str) -> None:
    docs = helm_template("-f", str(CHART / values_file))
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "ServiceMonitor", "EventBus", "EventSource", "Sensor", "NetworkPolicy"} <= kinds
    # The rooivalk image is the one components/images.py names (tag = package version), never :latest.
    for deployment in (find(docs, "Deployment", "rooivalk-mlflow"), find(docs, "Deployment", "rooivalk-monitor")):
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == CPU_IMAGE
    minio = [doc for doc in docs if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "rooivalk-minio"]
    assert bool(minio) == (values_file == "values-dev.yaml")


def test_values_files_choose_the_bucket_source() -> None:
    dev = find(helm_template("-f", str(CHART / "values-dev.yaml")), "EventSource", "rooivalk-bucket")["spec"]
    prod = find(helm_template("-f", str(CHART / "values-prod.yaml")), "EventSource", "rooivalk-bucket")["spec"]
    assert set(dev) - {"eventBusName", "template"} == {"minio"}
    assert dev["minio"]["data"]["endpoint"] == "rooivalk-minio:9000"
    assert set(prod) - {"eventBusName", "template"} == {"sqs"}
    assert prod["sqs"]["data"]["jsonBody"] is True
    assert "accessKey" not in prod["sqs"]["data"]  # IRSA: no static keys in prod


@pytest.mark.parametrize(
    ("values", "source", "sample"),
    [
        # Argo Events' MinioEventData: the records of MinIO's notification under `notification`.
        ("values-dev.yaml", "minio", {"notification": [{"eventName": "s3:ObjectCreated:Put"}]}),
        # SQSEventData with jsonBody: the message body (S3's notification JSON) under `body`.
        ("values-prod.yaml", "sqs", {"messageId": "1", "body": {"Records": [{"eventName": "ObjectCreated:Put"}]}}),
    ],
)
def test_sensor_reads_the_object_where_its_source_puts_it(values: str, source: str, sample: Doc) -> None:
    sensor = find(helm_template("-f", str(CHART / values)), "Sensor", "rooivalk-retraining")["spec"]
    dependency = next(dep for dep in sensor["dependencies"] if dep["name"] == "newObject")
    event_path = dependency["filters"]["data"][0]["path"]
    node: Any = sample
    for part in event_path.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    assert node.endswith("ObjectCreated:Put"), event_path
    trigger = next(t["template"] for t in sensor["triggers"] if t["template"]["name"] == "retrain-on-new-object")
    (parameter,) = trigger["k8s"]["parameters"]
    records = event_path.removesuffix(".0.eventName")
    assert f"index .Input.{records} 0" in parameter["src"]["dataTemplate"]
    assert parameter["dest"] == "spec.arguments.parameters.0.value"
    workflow = trigger["k8s"]["source"]["resource"]
    assert workflow["spec"]["arguments"]["parameters"][0]["name"] == "data_uri"


def test_monitor_posts_to_the_drift_webhook_service() -> None:
    docs = helm_template()
    source = find(docs, "EventSource", "rooivalk-drift-webhook")["spec"]
    (port,) = source["service"]["ports"]
    hook = source["webhook"]["drift"]
    # Argo Events names the EventSource's Service <name>-eventsource-svc.
    url = f"http://rooivalk-drift-webhook-eventsource-svc.rooivalk:{port['port']}{hook['endpoint']}"
    assert int(hook["port"]) == port["targetPort"]
    args = find(docs, "Deployment", "rooivalk-monitor")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"monitoring.webhook.url={url}" in args


def test_sensor_role_may_only_create_workflows() -> None:
    (rule,) = find(helm_template(), "Role", "rooivalk-sensor")["rules"]
    assert rule == {"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["create"]}
    # Argo Events' argoWorkflow trigger runs `argo submit` and then lists workflows: it needs list too.
    (rule,) = find(helm_template("--set", "events.sensor.triggerType=argoWorkflow"), "Role", "rooivalk-sensor")["rules"]
    assert rule["verbs"] == ["create", "list"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("mlfow.enabled=true", "additional properties 'mlfow' not allowed"),
        ("events.bucket.sorce=sqs", "additional properties 'sorce' not allowed"),
        ("events.bucket.source=gcs", "/events/bucket/source"),
        ("image.tag=latest", "/image/tag"),
        ("mlflow.resources.limits=null", "/mlflow/resources"),
    ],
)
def test_schema_refuses_bad_values(setting: str, message: str) -> None:
    result = run(tool("helm"), "lint", "--strict", str(CHART), "--set", setting)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


@pytest.mark.parametrize("directory", ["base", *(f"overlays/{overlay}" for overlay in OVERLAYS)])
def test_kustomize_renders(directory: str) -> None:
    docs = kustomize(directory)
    assert {doc["metadata"]["namespace"] for doc in docs} == {"rooivalk"}
    assert {"Deployment", "Sensor", "PrometheusRule"} <= {doc["kind"] for doc in docs}


def differences(generate: ModuleType, built: list[Doc], expected: list[Doc]) -> list[Any]:
    """How an overlay's build differs from the chart's render: missing or extra objects, and the JSON
    patch from the expected object to the built one. The monitoring objects (the rule and the
    dashboard, from manifests/base/monitoring) are left out: the chart's are compared in tests/unit."""
    got = {
        generate.key_of(doc): doc
        for doc in built
        if doc["metadata"]["labels"]["app.kubernetes.io/component"] != "monitoring"
    }
    want = {generate.key_of(doc): doc for doc in expected}
    found: list[Any] = sorted(set(got) ^ set(want))
    return found + [
        (key, generate.json_patch(doc, got[key])) for key, doc in want.items() if key in got and got[key] != doc
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_equals_the_chart_render(overlay: str, generate: ModuleType) -> None:
    """`kubectl kustomize` of an overlay gives what `helm template -f values-<overlay>.yaml` gives (with
    Helm's labels rewritten for kubectl)."""
    built = kustomize(f"overlays/{overlay}")
    assert differences(generate, built, generate.expected_overlay(REPO, overlay)) == []


def test_a_hand_edited_overlay_no_longer_equals_the_chart(generate: ModuleType, tmp_path: Path) -> None:
    shutil.copytree(REPO / "manifests", tmp_path / "manifests")
    patch = tmp_path / "manifests" / "overlays" / "dev" / "patches" / "sensor-rooivalk-retraining.yaml"
    patch.write_text(patch.read_text().replace("notification.0.eventName", "body.Records.0.eventName"))
    result = run(tool("kubectl"), "kustomize", str(tmp_path / "manifests" / "overlays" / "dev"))
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    (difference,) = differences(generate, built, generate.expected_overlay(REPO, "dev"))
    key, ops = difference
    assert key == ("Sensor", "rooivalk-retraining")
    assert ops == [
        {"op": "replace", "path": "/spec/dependencies/0/filters/data/0/path", "value": "body.Records.0.eventName"}
    ]


def test_generated_manifests_are_in_sync(generate: ModuleType) -> None:
    assert generate.stale_files(REPO) == [], "run `make manifests`"


def test_stale_manifests_are_named(generate: ModuleType, tmp_path: Path) -> None:
    """A changed values file, a hand-edited file and a left-over file are all reported, then rewritten."""
    shutil.copytree(CHART, tmp_path / "helm" / "rooivalk")
    shutil.copytree(REPO / "manifests", tmp_path / "manifests")
    (tmp_path / ".cache" / "tools").mkdir(parents=True)
    (tmp_path / ".cache" / "tools" / "helm").symlink_to(tool("helm"))
    assert generate.stale_files(tmp_path) == []

    values = tmp_path / "helm" / "rooivalk" / "values-prod.yaml"
    values.write_text(values.read_text().replace("replicas: 2", "replicas: 3", 1))
    hand_edited = tmp_path / "manifests" / "base" / "mlflow.yaml"
    hand_edited.write_text(hand_edited.read_text().replace("workers", "worker"))
    left_over = tmp_path / "manifests" / "overlays" / "dev" / "patches" / "old.yaml"
    left_over.write_text("[]\n")
    stale = generate.stale_files(tmp_path)
    assert stale == sorted(
        [
            "manifests/base/mlflow.yaml",
            "manifests/overlays/dev/patches/old.yaml",
            "manifests/overlays/prod/patches/deployment-rooivalk-mlflow.yaml",
        ]
    )
    assert generate.main(["--repo-dir", str(tmp_path), "--check"]) == 1

    assert generate.main(["--repo-dir", str(tmp_path)]) == 0
    assert generate.stale_files(tmp_path) == []
    assert not left_over.exists()
    patch = yaml.safe_load((tmp_path / "manifests/overlays/prod/patches/deployment-rooivalk-mlflow.yaml").read_text())
    assert {"op": "replace", "path": "/spec/replicas", "value": 3} in patch


@pytest.mark.parametrize(
    ("old", "new", "ops"),
    [
        ({"a": 1, "b": 2}, {"a": 1, "c": 3}, [{"op": "remove", "path": "/b"}, {"op": "add", "path": "/c", "value": 3}]),
        ({"l": [1, 2]}, {"l": [1, 3]}, [{"op": "replace", "path": "/l/1", "value": 3}]),
        ({"l": [1, 2]}, {"l": [1]}, [{"op": "replace", "path": "/l", "value": [1]}]),
        ({"m": {"a/b~": 1}}, {"m": {"a/b~": 2}}, [{"op": "replace", "path": "/m/a~1b~0", "value": 2}]),
        ({"a": 1}, {"a": 1}, []),
    ],
)
def test_json_patch(generate: ModuleType, old: Any, new: Any, ops: list[Doc]) -> None:
    assert generate.json_patch(old, new) == ops
