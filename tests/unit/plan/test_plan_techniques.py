"""Every training key a plan sets is honoured for its model or refused with its path (rooivalk.plan.techniques).

The leaves of TrainingSpec are listed from the pydantic models, and a non-default value for each is made
from its type, so a key added later is covered (and must be classified) without touching this file.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from rooivalk.plan import Plan, PlanError, TrainingSpec, validate_plan
from rooivalk.plan.techniques import BUILTIN_TASKS, ModelTraining, rule_for, set_leaves, training_sections

REPO = Path(__file__).resolve().parents[3]
BASE_STAGE: dict[str, Any] = {"name": "s", "epochs": 1, "train": ["all"], "lr": {"spread": [1e-3, 1e-3]}}


# -- the leaves of TrainingSpec -------------------------------------------------------------------
def _members(annotation: Any) -> list[Any]:
    """The types of a union (None left out), or the annotation itself."""
    if get_origin(annotation) in (Union, types.UnionType):
        return [arg for arg in get_args(annotation) if arg is not type(None)]
    return [annotation]


def _nested(annotation: Any) -> tuple[type[BaseModel], bool] | None:
    """(model, is a list of them) when the field holds a section rather than a value."""
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member, False
        if get_origin(member) is list:
            (item,) = get_args(member)
            if isinstance(item, type) and issubclass(item, BaseModel):
                return item, True
    return None


def technique_leaves(model: type[BaseModel] = TrainingSpec, prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every leaf of the model as (dotted path with list items as `*`, its field)."""
    for name, field in model.model_fields.items():
        nested = _nested(field.annotation)
        if nested is None:
            yield prefix + name, field
        else:
            section, is_list = nested
            yield from technique_leaves(section, f"{prefix}{name}.*." if is_list else f"{prefix}{name}.")


LEAVES = dict(technique_leaves())


# -- a valid value other than the defaults, from the field's type -----------------------------------
def _fits(value: Any, field: FieldInfo) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return True
    for bound in field.metadata:
        if (
            (isinstance(bound, annotated_types.Gt) and not value > bound.gt)
            or (isinstance(bound, annotated_types.Ge) and not value >= bound.ge)
            or (isinstance(bound, annotated_types.Lt) and not value < bound.lt)
            or (isinstance(bound, annotated_types.Le) and not value <= bound.le)
        ):
            return False
    return True


def _candidates(member: Any) -> list[Any]:
    if member is bool:
        return [True, False]
    if member is int:
        return [1, 2, 3, 50]
    if member is float:
        return [0.5, 0.25, 0.75, 2.0, 3.0, 50.0]
    if member is str:
        return ["other"]
    if get_origin(member) is Literal:
        return list(get_args(member))
    if get_origin(member) is tuple:
        return [(0.5, 0.9)]
    if get_origin(member) is list:
        return [["head"]]
    if get_origin(member) is dict:
        return [{"other": 2}]
    raise AssertionError(f"no value generator for {member!r}: extend _candidates")


def other_value(field: FieldInfo, avoid: list[Any]) -> Any:
    for member in _members(field.annotation):
        for value in _candidates(member):
            if value not in avoid and _fits(value, field):
                return value
    raise AssertionError(f"no valid value for {field!r} other than {avoid}")


# Keys whose value is checked against another key: set together so that only the key under test decides.
COMPANIONS: dict[str, dict[str, Any]] = {
    "early_stopping.monitor": {"early_stopping": {"monitor": "val_loss", "mode": "min"}},
    "early_stopping.mode": {"early_stopping": {"monitor": "val_loss", "mode": "min"}},
    # a distillation section needs its teacher
    "distillation.temperature": {"distillation": {"teacher": "runs/teacher/model", "temperature": 2.0}},
    "distillation.weight": {"distillation": {"teacher": "runs/teacher/model", "weight": 0.9}},
}


def _stage_with(leaf: str, value: Any) -> dict[str, Any]:
    """BASE_STAGE with one of its leaves (`lr.top`, `optimizer.name`, `seconds`) set."""
    stage = copy.deepcopy(BASE_STAGE)
    head, _, rest = leaf.partition(".")
    if head == "lr":  # one LR rule at a time
        stage["lr"] = {rest: value, **({"ratio": 2.0} if rest == "top" else {"top": 1e-3} if rest == "ratio" else {})}
    elif rest:
        stage[head] = {rest: value}
    else:
        stage[head] = value
        if head == "seconds":
            stage["epochs"] = None
    return stage


def training_with(leaf: str, default: TrainingSpec) -> dict[str, Any]:
    """A `training` section that sets `leaf` (a LEAVES path) to a value other than its defaults."""
    if leaf in COMPANIONS:
        return copy.deepcopy(COMPANIONS[leaf])
    field = LEAVES[leaf]
    parts = leaf.split(".")
    if parts[0] == "stages":
        class_default = field.get_default(call_default_factory=True)
        avoid = [] if class_default is PydanticUndefined else [class_default]
        return {"stages": [_stage_with(".".join(parts[2:]), other_value(field, avoid))]}
    section_default: Any = default
    for part in parts:  # an optional section (sequence_augment) is None by default: its leaves have no section default
        section_default = getattr(section_default, part, None)
    value = other_value(field, [field.get_default(call_default_factory=True), section_default])
    section: dict[str, Any] = {}
    node = section
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return section


# -- tiny plans, one per kind of training section -----------------------------------------------------
def _single(pretrained: bool) -> dict[str, Any]:
    model = {"architecture": "resnet18", **({"pretrained": "weights.pth"} if pretrained else {})}
    return {"name": "p", "data": {"source": "/data", "format": "image_folder"}, "model": model}


def _multi(**sensors: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "p",
        "data": {"source": "/data", "format": "multisensor"},
        "sensors": {name: {"model": model} for name, model in sensors.items()},
        "fusion": {},
    }


def _array(family: str, architecture: str, data_format: str) -> dict[str, Any]:
    return {
        "name": "p",
        "data": {"source": "/data", "format": data_format},
        "model": {"family": family, "architecture": architecture},
    }


RF = {"family": "rf_cnn_transformer", "architecture": "small"}
CREPE = {"family": "acoustic_crepe", "architecture": "tiny", "pretrained": "crepe.pth"}
# name: (plan, path of the training section under test)
CONTEXTS: dict[str, tuple[dict[str, Any], str]] = {
    "image-pretrained": (_single(pretrained=True), "training"),
    "image-scratch": (_single(pretrained=False), "training"),
    "tensor-scratch": (_multi(rf=RF), "sensors.rf.training"),
    "tensor-pretrained": (_multi(rf=RF, acoustic=CREPE), "sensors.acoustic.training"),
    "fusion": (_multi(rf=RF), "fusion.training"),
    "sequence-scratch": (_array("rnn", "standard", "sequences"), "training"),
    "table-scratch": (_array("mlp", "256-128-64", "table"), "training"),
}


def plan_with(context: str, training: dict[str, Any]) -> dict[str, Any]:
    raw, path = CONTEXTS[context]
    raw = copy.deepcopy(raw)
    node = raw
    for part in path.split("."):
        node = node.setdefault(part, {})
    node.update(copy.deepcopy(training))
    return raw


def section_of(raw: dict[str, Any], path: str) -> ModelTraining:
    (section,) = [
        s for s in training_sections(Plan.model_validate(raw)) if isinstance(s, ModelTraining) and s.path == path
    ]
    return section


def problems(raw: dict[str, Any]) -> list[str]:
    """The problem lines validate_plan reports (none when the plan is accepted), plugin families resolved as
    the CLI and pipeline steps resolve them."""
    from rooivalk.training.tasks import plugin_task_info

    try:
        validate_plan(raw, origin="plan.yaml", resolver=plugin_task_info)
    except PlanError as error:
        header, *lines = str(error).splitlines()
        assert header == f"plan.yaml: {len(lines)} problem(s) in the plan"
        return [line.strip() for line in lines]
    return []


# -- the table covers every key -----------------------------------------------------------------------
def test_every_training_key_is_classified() -> None:
    unclassified = []
    for leaf in LEAVES:
        try:
            rule_for(leaf.replace("*", "0"))
        except LookupError:
            unclassified.append(f"training.{leaf}")
    assert not unclassified, (
        f"{unclassified}: classify each new key in rooivalk.plan.techniques.KEY_RULES (honoured for every task, or "
        "refused with a reason where the engine does not apply it) and document it in docs/plan.md"
    )


def test_the_leaves_cover_the_sections_people_set() -> None:
    for leaf in ("augment.fog", "mix.mixup_alpha", "channels_last", "stages.*.input_size", "auto.scheduler.name"):
        assert leaf in LEAVES


@pytest.mark.parametrize("context", list(CONTEXTS))
def test_each_key_is_refused_with_its_path_or_accepted_as_the_table_says(context: str) -> None:
    base, path = CONTEXTS[context]
    default = section_of(base, path).default
    wrong = []
    for leaf in LEAVES:
        raw = plan_with(context, training_with(leaf, default))
        section = section_of(raw, path)
        concrete = leaf.replace("*", "0")
        if concrete not in set_leaves(section.training, section.default):
            wrong.append(f"{leaf}: the value set was not detected as set")
            continue
        reason = rule_for(concrete)(section)
        found = problems(raw)
        if reason is None and found:
            wrong.append(f"{leaf}: honoured by the table, refused: {found}")
        elif reason is not None and f"{path}.{concrete}: {reason}" not in found:
            wrong.append(f"{leaf}: refused by the table ({reason}), reported: {found}")
    assert not wrong, "\n".join(wrong)


# -- the contract, written out ------------------------------------------------------------------------
IMAGE_ONLY = ["augment.fog", "augment.random_resized_crop", "mix.mixup_alpha", "mix.prob", "channels_last"]


@pytest.mark.parametrize("leaf", IMAGE_ONLY)
def test_image_techniques_apply_to_images_only(leaf: str) -> None:
    for context in ("image-pretrained", "image-scratch"):
        assert problems(plan_with(context, training_with(leaf, TrainingSpec()))) == []
    rf = problems(plan_with("tensor-scratch", training_with(leaf, TrainingSpec())))
    assert len(rf) == 1
    assert rf[0].startswith(f"sensors.rf.training.{leaf}: ")
    assert rf[0].endswith("not apply to rf_cnn_transformer inputs (tensor task)")
    fusion = problems(plan_with("fusion", training_with(leaf, TrainingSpec())))
    assert fusion[0].endswith("not apply to fusion inputs (fusion task)")


def test_the_briefs_example_message() -> None:
    raw = plan_with("tensor-scratch", {"augment": {"fog": 0.3}})
    assert problems(raw) == [
        "sensors.rf.training.augment.fog: image augmentation does not apply to rf_cnn_transformer inputs (tensor task)"
    ]


def test_progressive_resizing_and_cached_features_per_task() -> None:
    stage = {**BASE_STAGE, "input_size": 16}
    assert problems(plan_with("image-pretrained", {"stages": [stage]})) == []
    (line,) = problems(plan_with("tensor-pretrained", {"stages": [stage]}))
    assert line.startswith("sensors.acoustic.training.stages.0.input_size: progressive resizing is for images")
    cached = {**BASE_STAGE, "train": ["head"], "cache_features": True}
    assert problems(plan_with("tensor-pretrained", {"stages": [cached], "feature_precision": "fp32"})) == []
    assert problems(plan_with("fusion", {"stages": [cached], "feature_precision": "fp32"})) == [
        "fusion.training.stages.0.cache_features: the fusion model's inputs are already cached embeddings",
        "fusion.training.feature_precision: the fusion model's inputs are already cached embeddings",
    ]


@pytest.mark.parametrize(
    ("context", "training", "refused"),
    [
        # pretrained, no stages: schedule auto by default
        ("image-pretrained", {"schedule": "reference"}, []),
        ("image-pretrained", {"auto": {"top": 1e-2}, "epochs": 3}, []),
        ("image-pretrained", {"budget_seconds": 60, "auto": {"head_epochs": 2}}, []),
        ("image-pretrained", {"budget_seconds": 60, "epochs": 3}, ["epochs"]),
        ("image-pretrained", {"lr": 1e-2}, ["lr"]),
        ("image-pretrained", {"schedule": "reference", "auto": {"top": 1e-2}, "epochs": 3}, ["auto.top", "epochs"]),
        ("image-pretrained", {"schedule": "reference", "budget_seconds": 60}, ["budget_seconds"]),
        # from scratch, no stages: one stage of epochs at lr
        ("image-scratch", {"epochs": 3, "lr": 1e-2}, []),
        ("image-scratch", {"schedule": "reference", "auto": {"head_lr": 1e-2}}, ["schedule", "auto.head_lr"]),
        ("image-scratch", {"budget_seconds": 60}, ["budget_seconds"]),
        (
            "tensor-scratch",
            {"budget_seconds": 60, "auto": {"scheduler": {"name": "onecycle"}}},
            ["auto.scheduler.name", "budget_seconds"],  # in TrainingSpec's order
        ),
        ("fusion", {"epochs": 5, "lr": 1e-2}, []),
        ("fusion", {"schedule": "reference"}, ["schedule"]),
        # explicit stages
        (
            "image-pretrained",
            {"stages": [BASE_STAGE], "lr": 1e-2, "epochs": 3, "schedule": "reference"},
            ["schedule", "epochs", "lr"],
        ),
        ("image-pretrained", {"stages": [BASE_STAGE], "budget_seconds": 60}, ["budget_seconds"]),
        ("image-pretrained", {"stages": [{**BASE_STAGE, "epochs": None, "seconds": "rest"}], "budget_seconds": 60}, []),
        ("tensor-pretrained", {"stages": [BASE_STAGE], "auto": {"top": 1e-2}}, ["auto.top"]),
    ],
)
def test_schedule_keys_apply_to_how_the_model_trains(
    context: str, training: dict[str, Any], refused: list[str]
) -> None:
    path = CONTEXTS[context][1]
    found = problems(plan_with(context, training))
    assert [line.split(": ", 1)[0] for line in found] == [f"{path}.{leaf}" for leaf in refused], found


def test_warm_start_accepts_the_keys_of_both_pipelines() -> None:
    """Without weights the training pipeline trains from scratch (epochs, lr); with retraining.warm_start the
    retraining pipeline starts from the champion's weights (schedule, auto, budget_seconds)."""
    training = {"epochs": 3, "lr": 1e-2, "budget_seconds": 60, "auto": {"top": 1e-2}}
    raw = {**plan_with("image-scratch", training), "retraining": {"warm_start": True}}
    assert problems(raw) == []
    raw["training"]["schedule"] = "reference"  # its fixed stages use neither auto nor a budget
    assert [line.split(": ", 1)[0] for line in problems(raw)] == ["training.auto.top", "training.budget_seconds"]
    raw["training"] = {"stages": [BASE_STAGE], "lr": 1e-2}
    assert problems(raw) == ["training.lr: explicit stages given: each stage sets its own lr"]
    # The retraining pipeline's own plan: prepare_retraining set the champion's weights as model.pretrained.
    retraining = {**plan_with("image-pretrained", training), "retraining": {"warm_start": True}}
    assert problems(retraining) == []


def test_explicit_stages_name_the_reason() -> None:
    (line,) = problems(plan_with("image-pretrained", {"stages": [BASE_STAGE], "lr": 1e-2}))
    assert line == "training.lr: explicit stages given: each stage sets its own lr"
    (line,) = problems(plan_with("tensor-scratch", {"schedule": "reference"}))
    assert "trains from scratch (sensors.rf.model.pretrained is null)" in line


def test_a_rest_stage_needs_a_budget() -> None:
    stage = {**BASE_STAGE, "epochs": None, "seconds": "rest"}
    assert problems(plan_with("image-scratch", {"stages": [stage]})) == [
        "training.stages.0.seconds: rest (what is left of the budget) needs training.budget_seconds"
    ]


def test_distributed_is_for_single_model_plans() -> None:
    assert problems(plan_with("image-scratch", {"distributed": {"nproc_per_node": 2}})) == []
    for context in ("tensor-scratch", "fusion"):
        (line,) = problems(plan_with(context, {"distributed": {"backend": "gloo"}}))
        path = CONTEXTS[context][1]
        assert line == (
            f"{path}.distributed.backend: the multi-sensor pipeline's steps train in one process; "
            "distributed applies to single-model plans"
        )


def test_distillation_is_refused_for_fusion_and_cached_head_stages() -> None:
    teacher = {"teacher": "runs/teacher/model"}
    for context in ("image-pretrained", "image-scratch", "tensor-scratch", "sequence-scratch", "table-scratch"):
        assert problems(plan_with(context, {"distillation": teacher})) == [], context
    assert problems(plan_with("fusion", {"distillation": {**teacher, "weight": 0.9}})) == [
        f"fusion.training.distillation.{leaf}: the fusion model trains on this run's cached sensor embeddings, "
        "which no teacher model takes as inputs"
        for leaf in ("teacher", "weight")
    ]
    cached = {**BASE_STAGE, "train": ["head"], "cache_features": True}
    (line,) = problems(plan_with("tensor-pretrained", {"stages": [BASE_STAGE, cached], "distillation": teacher}))
    assert line == (
        "sensors.acoustic.training.distillation.teacher: stages.1 sets cache_features: a cached head stage never "
        "runs the full input through the model, so the teacher has nothing to compare with (drop cache_features "
        "to distill)"
    )
    with pytest.raises(PlanError, match=r"distillation\.teacher: .*give a model folder"):
        validate_plan(plan_with("image-scratch", {"distillation": {"teacher": []}}))
    with pytest.raises(PlanError, match=r"distillation\.weight"):
        validate_plan(plan_with("image-scratch", {"distillation": {**teacher, "weight": 1.5}}))


def test_a_multi_sensor_plans_top_level_training_is_refused_key_by_key() -> None:
    raw = _multi(rf=RF)
    raw["training"] = {"epochs": 3, "augment": {"fog": 0.2}, "early_stopping": {"monitor": "val_f1"}}
    reason = (
        "a multi-sensor plan's models train by sensors.<name>.training and fusion.training; "
        "the top-level training section applies to single-model plans"
    )
    assert problems(raw) == [
        f"training.epochs: {reason}",
        f"training.augment.fog: {reason}",
        f"training.early_stopping.monitor: {reason}",
    ]


@pytest.mark.parametrize(
    ("early_stopping", "line"),
    [
        ({"monitor": "val_f1"}, "monitor: unknown metric 'val_f1'; the engine logs val_accuracy, val_loss, train_loss"),
        ({"monitor": "val_loss"}, "mode: mode max contradicts monitor val_loss (lower is better): use mode min"),
        ({"monitor": "train_loss", "mode": "max"}, "mode: mode max contradicts monitor train_loss"),
        ({"mode": "min"}, "mode: mode min contradicts monitor val_accuracy (higher is better): use mode max"),
    ],
)
def test_early_stopping_monitors_a_logged_metric_in_its_direction(early_stopping: dict[str, Any], line: str) -> None:
    for context, (_, path) in CONTEXTS.items():
        found = problems(plan_with(context, {"early_stopping": early_stopping}))
        assert len(found) == 1, found
        assert found[0].startswith(f"{path}.early_stopping.{line}"), (context, found)


@pytest.mark.parametrize(("monitor", "mode"), [("val_accuracy", "max"), ("val_loss", "min"), ("train_loss", "min")])
def test_early_stopping_accepts_the_logged_metrics(monitor: str, mode: str) -> None:
    assert problems(plan_with("tensor-scratch", {"early_stopping": {"monitor": monitor, "mode": mode}})) == []


def test_a_plan_with_several_problems_lists_them_all() -> None:
    raw = _multi(rf=RF, acoustic=CREPE)
    raw["training"] = {"batch_size": 8}
    raw["sensors"]["rf"]["training"] = {"augment": {"fog": 0.3}, "mix": {"cutmix_alpha": 1.0}}
    raw["sensors"]["acoustic"]["training"] = {"lr": 1e-2, "early_stopping": {"monitor": "val_f1"}}
    raw["fusion"] = {"training": {"feature_precision": "bf16", "distributed": {"nproc_per_node": 2}}}
    with pytest.raises(PlanError) as error:
        validate_plan(raw, origin="many.yaml")
    lines = str(error.value).splitlines()
    assert lines[0] == "many.yaml: 7 problem(s) in the plan"
    assert [line.strip().split(": ", 1)[0] for line in lines[1:]] == [
        "training.batch_size",
        "sensors.rf.training.mix.cutmix_alpha",
        "sensors.rf.training.augment.fog",
        "sensors.acoustic.training.lr",
        "sensors.acoustic.training.early_stopping.monitor",
        "fusion.training.distributed.nproc_per_node",
        "fusion.training.feature_precision",
    ]


def test_a_plan_dumped_with_every_field_reads_as_set_as_its_file() -> None:
    """KFP parameters carry the whole plan: defaults written out are not keys the plan set."""
    for raw, _ in CONTEXTS.values():
        plan = validate_plan(raw)
        assert validate_plan(plan.to_parameter()) == plan
        assert validate_plan(plan.model_dump(mode="json")) == plan


def test_the_fusion_sections_own_defaults_are_not_set() -> None:
    raw = plan_with("fusion", {"stages": [BASE_STAGE]})  # epochs 10 (the field's) and 30 (fusion's): neither set
    assert problems(raw) == []
    raw["fusion"]["training"]["epochs"] = 30
    assert problems(raw) == []
    raw["fusion"]["training"]["epochs"] = 12
    assert problems(raw) == ["fusion.training.epochs: explicit stages given: each stage sets its own epochs"]


def test_the_shipped_plans_validate() -> None:
    for path in sorted((REPO / "pipelines" / "plans").glob("*.yaml")):
        from rooivalk.plan import load_plan

        load_plan(path)


def test_checking_a_built_in_plan_does_not_import_torch() -> None:
    code = (
        "import sys, rooivalk.plan as p; "
        "p.load_plan('pipelines/plans/counter_drone.yaml'); p.load_plan('pipelines/plans/fashion_finetune.yaml'); "
        "assert 'torch' not in sys.modules, 'plan validation imported torch'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


# -- plugin families: the registry names their task (imports torch) ---------------------------------------
def _registry() -> Any:
    registry = pytest.importorskip("rooivalk.models.registry")
    if not hasattr(registry, "family_task"):
        pytest.skip("rooivalk.models.registry.family_task is not there yet: plugin families cannot name their task")
    return registry


def test_the_built_in_table_matches_the_registry() -> None:
    registry = _registry()
    assert {family: registry.family_task(family) for family in BUILTIN_TASKS} == BUILTIN_TASKS


def test_a_plugin_family_is_checked_by_the_task_it_registers() -> None:
    registry = _registry()
    name = "plan_techniques_test_tensor"
    try:
        registry.family_task(name)
    except ValueError:  # not registered yet in this process

        @registry.register_family(name, task="tensor")
        def build(spec: Any, num_classes: int) -> Any:  # never called: validation only asks the task
            raise AssertionError

    raw = _multi(custom={"family": name, "architecture": "x"})
    raw["sensors"]["custom"]["training"] = {"augment": {"vflip": 0.5}, "channels_last": False}
    assert [line.split(": ", 1)[0] for line in problems(raw)] == [
        "sensors.custom.training.augment.vflip",
        "sensors.custom.training.channels_last",
    ]
    assert problems(_multi(custom={"family": name, "architecture": "x"})) == []


def test_an_unknown_family_is_refused_at_its_path() -> None:
    _registry()
    (line,) = problems(_multi(rf=RF, odd={"family": "no_such_family", "architecture": "x"}))
    assert line.startswith("sensors.odd.model.family: unknown family 'no_such_family'")
