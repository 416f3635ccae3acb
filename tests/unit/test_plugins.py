"""Plugins through entry points: the installed example package, clashes, broken plugins, lazy loading.

The example plugin (tests/plugins/rooivalk_example_plugin) is really installed (`make setup`). Other
plugins are distributions made for one test: a dist-info folder with real metadata put on sys.path
(tests.plugin_helpers.fake_distribution); importlib.metadata is never monkeypatched.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rooivalk.data import ingest_data
from rooivalk.data.dataset import load_dataset, load_quarantine
from rooivalk.data.reader_registry import list_readers, reader_origin
from rooivalk.models import create_model, family_origin, family_task, layer_groups, list_families
from rooivalk.plan import (
    ARRAY_FORMATS,
    BUILTIN_DATA_FORMATS,
    DETECTION_FORMATS,
    DataSpec,
    ModelSpec,
    PlanError,
    validate_plan,
)
from rooivalk.plugins import FAMILIES_GROUP, READERS_GROUP, TASKS_GROUP, PluginError, load_entry_points
from tests.plugin_helpers import fake_distribution, make_csv_images

EXAMPLE = "rooivalk-example-plugin 0.1.0"


def test_example_family_and_reader_are_listed_with_their_origin() -> None:
    assert {"timm", "rf_cnn_transformer", "radar_sequence", "acoustic_crepe", "example_mlp_cnn"} <= set(list_families())
    assert family_origin("example_mlp_cnn") == f"{EXAMPLE} (rooivalk_example_plugin.model:create_example_mlp_cnn)"
    assert family_task("example_mlp_cnn") == "example_noisy_images"
    assert [(name, family_task(name), family_origin(name)) for name in ("timm", "radar_sequence")] == [
        ("timm", "image", "built-in"),
        ("radar_sequence", "tensor", "built-in"),
    ]
    assert "example_csv_images" in list_readers()
    assert reader_origin("example_csv_images") == f"{EXAMPLE} (rooivalk_example_plugin.reader:read_csv_images)"
    assert reader_origin("image_folder") == "built-in"


def test_builtin_readers_and_the_plans_builtin_formats_agree() -> None:
    builtin = {name for name in list_readers() if reader_origin(name) == "built-in"}
    # The image readers are registered; multisensor, the array and the detection formats have their own ingestion.
    assert builtin | {"multisensor", *ARRAY_FORMATS, *DETECTION_FORMATS} == set(BUILTIN_DATA_FORMATS)


def test_example_family_builds_a_model_the_image_trainer_can_use() -> None:
    model = create_model(ModelSpec(family="example_mlp_cnn", architecture="tiny", input_size=16), 3)
    assert [group.name for group in layer_groups(model)] == ["stem", "block", "mlp", "head"]
    batch = torch.zeros(2, 3, 16, 16)
    assert model(batch).shape == (2, 3)
    assert model.forward_head(model.forward_features(batch), pre_logits=True).shape == (2, 32)
    with pytest.raises(ValueError, match="model.architecture: 'huge' is not an example_mlp_cnn"):
        create_model(ModelSpec(family="example_mlp_cnn", architecture="huge"), 3)


def test_example_reader_ingests_csv_rows_and_quarantines_bad_ones(tmp_path: Path) -> None:
    source = make_csv_images(tmp_path / "shapes.csv", per_class=10)
    split = {"train": 0.6, "val": 0.2, "test": 0.2}
    result = ingest_data(DataSpec(source=str(source), format="example_csv_images", split=split), str(tmp_path / "ds"))
    assert result.info.classes == ["circle", "square", "stripes"]
    assert result.info.image_shape == (16, 16, 1)
    assert load_dataset(str(tmp_path / "ds")).info.num_samples == 30
    reasons = {entry["origin"].rsplit("#", 1)[1]: entry["reason"] for entry in load_quarantine(str(tmp_path / "ds"))}
    assert reasons == {
        "31": "3 pixel values do not make a square image",
        "32": "pixel values must be 0..255",
        "33": "no label in the first column",
    }


def test_plan_accepts_a_reader_plugins_format_without_importing_it_or_torch() -> None:
    code = (
        "import sys; from rooivalk.plan import validate_plan\n"
        "plan = {'name': 'p', 'data': {'source': '/d', 'format': 'example_csv_images'},"
        " 'model': {'architecture': 'resnet18'}}\n"
        "print(validate_plan(plan).data.format)\n"
        "print(sorted(m for m in sys.modules if m.startswith('rooivalk_example_plugin') or m == 'torch'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[:2] == ["example_csv_images", "[]"]  # metadata read, nothing imported


def test_plan_refuses_an_unknown_format_naming_the_key_and_the_known_formats() -> None:
    raw = {"name": "p", "data": {"source": "/d", "format": "csv_images"}, "model": {"architecture": "resnet18"}}
    with pytest.raises(PlanError) as caught:
        validate_plan(raw, "plan.yaml")
    message = str(caught.value)
    assert "data.format: Value error, unknown data format 'csv_images'" in message
    assert "known formats: image_folder, idx, multisensor, sequences, table, yolo, coco, example_csv_images" in message
    assert json.dumps(DataSpec.model_json_schema()["properties"]["format"]["type"]) == '"string"'


def test_unknown_family_lists_the_plugin_families_too() -> None:
    with pytest.raises(ValueError, match=r"model.family: unknown family 'nope'; known: \[.*'example_mlp_cnn'"):
        create_model(ModelSpec(family="nope", architecture="x"), 2)


def test_a_plugin_taking_a_builtin_name_is_refused_before_its_code_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "rooivalk_test_clash_mod"
    fake_distribution(
        monkeypatch,
        tmp_path,
        "rooivalk-test-clash",
        {FAMILIES_GROUP: {"timm": f"{module}:build"}, READERS_GROUP: {"idx": f"{module}:read"}},
        {module: "raise RuntimeError('must not be imported')\n"},
    )
    assert create_model(ModelSpec(architecture="test_efficientnet"), 2) is not None  # the built-in still wins
    with pytest.raises(PluginError) as family:
        list_families()
    assert str(family.value) == (
        f"rooivalk.families entry point 'timm' = '{module}:build' of rooivalk-test-clash 1.0: 'timm' is a "
        "built-in model family; a plugin cannot replace it, rename the entry point"
    )
    with pytest.raises(PluginError, match="'idx' is a built-in data reader; a plugin cannot replace it"):
        list_readers()
    assert module not in sys.modules


def test_plugin_code_registering_a_builtin_name_fails_naming_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "rooivalk_test_sneaky_mod"
    source = (
        "from rooivalk.models import register_family\n\n"
        "@register_family('timm')\ndef build(spec, num_classes):\n    raise AssertionError\n"
    )
    fake_distribution(
        monkeypatch, tmp_path, "rooivalk-test-sneaky", {FAMILIES_GROUP: {"sneaky": f"{module}:build"}}, {module: source}
    )
    with pytest.raises(PluginError) as caught:
        create_model(ModelSpec(family="sneaky", architecture="x"), 2)
    assert str(caught.value) == (
        f"rooivalk.families entry point 'sneaky' = '{module}:build' of rooivalk-test-sneaky 1.0 failed to load: "
        "ValueError: model family 'timm' is already registered (built-in)"
    )
    assert family_origin("timm") == "built-in"


def test_a_broken_plugin_fails_naming_entry_point_distribution_and_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "rooivalk_test_broken_mod"
    fake_distribution(
        monkeypatch,
        tmp_path,
        "rooivalk-test-broken",
        {FAMILIES_GROUP: {"broken_family": f"{module}:build"}},
        {module: "import rooivalk_no_such_dependency\n"},
    )
    expected = (
        f"rooivalk.families entry point 'broken_family' = '{module}:build' of rooivalk-test-broken 1.0 failed to "
        "load: ModuleNotFoundError: No module named 'rooivalk_no_such_dependency'"
    )
    for attempt in (lambda: create_model(ModelSpec(family="broken_family", architecture="x"), 2), list_families):
        with pytest.raises(PluginError) as caught:
            attempt()
        assert str(caught.value) == expected
        assert isinstance(caught.value.__cause__, ModuleNotFoundError)
    # Other families do not need it: a lookup that hits loads nothing.
    assert family_task("example_mlp_cnn") == "example_noisy_images"


def test_a_plain_callable_becomes_the_family_of_its_entry_point_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "rooivalk_test_plain_mod"
    source = (
        "from torch import nn\n\n"
        "def build(spec, num_classes):\n    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))\n\n"
        "build.rooivalk_task = 'tensor'\n"
        "NOT_A_BUILDER = 3\n"
    )
    entries = {"plain_tensor_family": f"{module}:build", "not_callable": f"{module}:NOT_A_BUILDER"}
    fake_distribution(monkeypatch, tmp_path, "rooivalk-test-plain", {FAMILIES_GROUP: entries}, {module: source})
    model = create_model(ModelSpec(family="plain_tensor_family", architecture="x"), 4)
    assert model(torch.zeros(2, 5)).shape == (2, 4)
    assert family_task("plain_tensor_family") == "tensor"
    assert family_origin("plain_tensor_family") == f"rooivalk-test-plain 1.0 ({module}:build)"
    with pytest.raises(PluginError, match="a model family is a callable .* not int"):
        family_task("not_callable")


def test_a_plugin_registering_another_name_than_its_entry_point_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "rooivalk_test_renamed_mod"
    source = (
        "from rooivalk.models import register_family\n\n"
        "@register_family('renamed_inside')\ndef build(spec, num_classes):\n    raise AssertionError\n"
    )
    fake_distribution(
        monkeypatch,
        tmp_path,
        "rooivalk-test-renamed",
        {FAMILIES_GROUP: {"renamed_outside": f"{module}:build"}},
        {module: source},
    )
    with pytest.raises(PluginError, match="its code registers model family 'renamed_inside'; the entry point and"):
        family_task("renamed_outside")


def test_two_distributions_declaring_one_name_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("rooivalk-test-one", "rooivalk-test-two"):
        fake_distribution(
            monkeypatch, tmp_path / name, name, {READERS_GROUP: {"twice": f"{name.replace('-', '_')}:read"}}
        )
    with pytest.raises(
        PluginError, match="two entry points are named 'twice'.* of rooivalk-test-.* and .* of rooivalk-test-"
    ):
        list_readers()


def test_any_group_loads_generically_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = "rooivalk_test_task_mod"
    fake_distribution(
        monkeypatch,
        tmp_path,
        "rooivalk-test-task",
        {TASKS_GROUP: {"example_task": f"{module}:ExampleTask"}},
        {module: "class ExampleTask:\n    name = 'example_task'\n"},
    )
    (plugin,) = [p for p in load_entry_points(TASKS_GROUP) if p.name == "example_task"]
    assert (plugin.name, plugin.value, plugin.distribution, plugin.version) == (
        "example_task",
        f"{module}:ExampleTask",
        "rooivalk-test-task",
        "1.0",
    )
    assert plugin.origin == f"rooivalk-test-task 1.0 ({module}:ExampleTask)"
    assert plugin.obj.__name__ == "ExampleTask"  # type: ignore[attr-defined]
    assert any(p is plugin for p in load_entry_points(TASKS_GROUP))  # loaded once: the same object


def test_the_example_task_plugin_trains_the_example_family(tmp_path: Path) -> None:
    """The family's task names the plugin task; build_trainer builds it from the plan, and its training
    batches carry the task's noise while the statistics pass (no generator) sees clean images."""
    import numpy as np
    import torch
    from rooivalk_example_plugin.task import NoisyImages

    from rooivalk.data.dataset import load_dataset
    from rooivalk.data.ingest import ingest_data
    from rooivalk.plan import Plan
    from rooivalk.training.image_training import build_trainer
    from rooivalk.training.tasks import task_class, task_origin
    from tests.plugin_helpers import make_csv_images

    assert task_class("example_noisy_images") is NoisyImages
    assert task_origin("example_noisy_images").startswith("rooivalk-example-plugin 0.1.0")
    source = make_csv_images(tmp_path / "shapes.csv", per_class=10, bad_rows=False)
    plan = Plan.model_validate(
        {
            "name": "plugin",
            "data": {"source": str(source), "format": "example_csv_images", "image_size": 16},
            "model": {"family": "example_mlp_cnn", "architecture": "tiny", "input_size": 16},
            "training": {"batch_size": 4, "augment": {"hflip": 0.0}},
        }
    )
    ingest_data(plan.data, str(tmp_path / "dataset"))
    trainer = build_trainer(plan, load_dataset(str(tmp_path / "dataset")), torch.device("cpu"), print, print)
    task = trainer.task
    assert isinstance(task, NoisyImages)
    index = np.arange(4)
    stage = trainer.stages[0]
    clean = task.unit_batch(index, task.inputs, None)
    noisy = task.unit_batch(index, task.inputs, torch.Generator().manual_seed(0))
    assert not torch.equal(clean, noisy)
    assert 0.01 < float((noisy - clean).std()) < 0.1
    assert torch.equal(
        task.train_batch(index, stage, None, torch.device("cpu"))[0],
        task.train_batch(index, stage, None, torch.device("cpu"))[0],
    )
