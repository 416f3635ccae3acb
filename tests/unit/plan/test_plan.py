from pathlib import Path

import pytest
import yaml

from rooivalk.plan import FusionSpec, Plan, PlanError, apply_overrides, load_plan, plan_json_schema, validate_plan

REPO = Path(__file__).resolve().parents[3]
FASHION = REPO / "pipelines" / "plans" / "fashion_finetune.yaml"


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _minimal() -> dict:
    return {"name": "p", "data": {"source": "/data", "format": "image_folder"}, "model": {"architecture": "resnet18"}}


def test_shipped_fashion_plan_validates() -> None:
    plan = load_plan(FASHION)
    assert plan.model.architecture == "tf_efficientnet_lite0"
    assert plan.training.stages is None
    assert plan.training.schedule == "auto"
    assert plan.training.budget_seconds == 500


def test_unknown_key_names_file_and_key_path(tmp_path: Path) -> None:
    data = _minimal()
    data["training"] = {"optimiser": "adamw"}
    path = _write(tmp_path, data)
    with pytest.raises(PlanError) as error:
        load_plan(path)
    assert str(path) in str(error.value)
    assert "training.optimiser: unknown key" in str(error.value)


def test_wrong_type_names_key_path(tmp_path: Path) -> None:
    data = _minimal()
    data["training"] = {"stages": [{"name": "s", "epochs": "many", "train": ["head"], "lr": {"head": 1e-3}}]}
    with pytest.raises(PlanError, match=r"training\.stages\.0\.epochs"):
        load_plan(_write(tmp_path, data))


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="plan file not found"):
        load_plan(tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(PlanError, match="YAML mapping"):
        load_plan(bad)


def test_overrides_parse_yaml_scalars_and_create_keys() -> None:
    raw = apply_overrides(
        _minimal(),
        [
            "data.source=s3://bucket/x",
            "training.batch_size=32",
            "model.pretrained=null",
            "training.augment.hflip=0",
            "evaluation.fail_on_gate=false",
        ],
    )
    plan = validate_plan(raw)
    assert plan.data.source == "s3://bucket/x"
    assert plan.training.batch_size == 32
    assert plan.model.pretrained is None
    assert plan.training.augment.hflip == 0


def test_override_without_equals_is_an_error() -> None:
    with pytest.raises(PlanError, match="expected key.path=value"):
        apply_overrides(_minimal(), ["training.batch_size"])


def test_split_fractions_must_sum_to_one() -> None:
    data = _minimal()
    data["data"]["split"] = {"train": 0.8, "val": 0.15, "test": 0.15}
    with pytest.raises(PlanError, match="sum to 1"):
        validate_plan(data)


def test_stage_lr_needs_exactly_one_rule() -> None:
    data = _minimal()
    data["training"] = {
        "stages": [{"name": "s", "epochs": 1, "train": ["all"], "lr": {"head": 1e-3, "spread": [1e-5, 1e-3]}}]
    }
    with pytest.raises(PlanError, match="exactly one LR rule"):
        validate_plan(data)


def test_schema_and_parameter_round_trip() -> None:
    schema = plan_json_schema()
    assert schema["additionalProperties"] is False
    assert {"data", "model", "training"} <= set(schema["properties"])
    plan = load_plan(FASHION)
    parameter = plan.to_parameter()
    assert None not in _values(parameter)
    assert Plan.model_validate(parameter) == plan
    assert plan.digest() == Plan.model_validate(parameter).digest()


def _values(data: object) -> list:
    if isinstance(data, dict):
        return [v for value in data.values() for v in _values(value)]
    if isinstance(data, list):
        return [v for value in data for v in _values(value)]
    return [data]


COUNTER_DRONE = REPO / "pipelines" / "plans" / "counter_drone.yaml"


def test_counter_drone_plan_is_a_multi_sensor_plan() -> None:
    plan = load_plan(COUNTER_DRONE)
    assert plan.model is None
    assert plan.sensors is not None
    assert list(plan.sensors) == ["optical", "rf", "radar", "acoustic"]
    assert plan.fusion is not None
    assert plan.fusion.modality_dropout.p == 0.5  # picked on validation (benchmarks/counter_drone.py)
    assert FusionSpec().modality_dropout.p == 0.2  # the library default the issue asks for
    with pytest.raises(PlanError, match="multi-sensor plan"):
        _ = plan.single_model


def test_a_plan_has_either_a_model_or_sensors() -> None:
    raw = yaml.safe_load(COUNTER_DRONE.read_text())
    raw["model"] = {"architecture": "resnet18"}
    with pytest.raises(PlanError, match="either 'model'"):
        validate_plan(raw)
    raw = yaml.safe_load(COUNTER_DRONE.read_text())
    raw["data"]["format"] = "idx"
    with pytest.raises(PlanError, match="'sensors' needs data.format: multisensor"):
        validate_plan(raw)
    raw = yaml.safe_load(COUNTER_DRONE.read_text())
    raw["fusion"]["heads"] = 5
    with pytest.raises(PlanError, match=r"fusion: .*divisible by heads"):
        validate_plan(raw)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("items", "reserved"),
        ("clear", "reserved"),
        ("train", "reserved"),
        ("Optical", "lowercase"),
        ("ir-1", "lowercase"),
    ],
)
def test_a_sensor_name_that_would_break_the_fusion_model_is_refused(name: str, message: str) -> None:
    # Sensor names key the fusion model's nn.ModuleDict: "items" or "clear" made torch raise a bare
    # KeyError ("attribute 'clear' already exists") while building the model, after the sensors trained.
    raw = yaml.safe_load(COUNTER_DRONE.read_text())
    raw["sensors"][name] = raw["sensors"].pop("radar")
    raw["export"]["models"].pop("radar")  # export settings are keyed by sensor name too
    with pytest.raises(PlanError, match=rf"sensors\.{name}: .*{message}"):
        validate_plan(raw)
    raw["sensors"]["radar_2"] = raw["sensors"].pop(name)
    assert list(validate_plan(raw).sensors or {}) == ["optical", "rf", "acoustic", "radar_2"]


def test_the_reserved_sensor_names_are_the_installed_torch_module_dicts_attributes() -> None:
    # rooivalk/plan/document.py lists them so that checking a plan does not import torch; a torch upgrade that adds or
    # drops a ModuleDict attribute fails here, not in a user's fusion step.
    import re

    from torch import nn

    from rooivalk.plan import MODULE_DICT_ATTRIBUTES

    public = {name for name in dir(nn.ModuleDict()) if re.fullmatch(r"[a-z][a-z0-9_]*", name)}
    assert public == MODULE_DICT_ATTRIBUTES


def test_a_null_whose_default_is_not_null_survives_the_kfp_parameter() -> None:
    """KFP parameters cannot hold None: dropped, `grad_clip_norm: null` (clipping off) would come back 1.0."""
    from kfp.compiler.pipeline_spec_builder import to_protobuf_value

    path = FASHION
    plan = load_plan(path, ["training.grad_clip_norm=null", "training.auto.head_samples=null"])
    parameter = plan.to_parameter()
    to_protobuf_value(parameter)  # what KFP does with a pipeline parameter: no None anywhere
    back = Plan.model_validate(parameter)
    assert (back.training.grad_clip_norm, back.training.auto.head_samples) == (None, None)
    assert back == plan
    assert "_nulls" not in load_plan(path).to_parameter()  # nothing to carry: the parameter is unchanged
