import pytest

from rooivalk.models import HEAD, create_model, layer_groups, resolve_selectors
from rooivalk.plan import ModelSpec


@pytest.fixture(scope="module")
def lite0_groups():
    return layer_groups(create_model(ModelSpec(architecture="tf_efficientnet_lite0"), 10))


def test_timm_groups_run_input_to_output_with_head_last(lite0_groups) -> None:
    names = [g.name for g in lite0_groups]
    assert names == ["stem", *[f"blocks.{i}" for i in range(7)], HEAD]
    head = lite0_groups[-1]
    assert head.param_names == ["classifier.weight", "classifier.bias"]
    assert head.num_params == 1280 * 10 + 10


def test_every_parameter_in_exactly_one_group(lite0_groups) -> None:
    model = create_model(ModelSpec(architecture="tf_efficientnet_lite0"), 10)
    names = [n for g in lite0_groups for n in g.param_names]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert len(names) == len(set(names))


def test_selectors(lite0_groups) -> None:
    assert resolve_selectors(lite0_groups, [HEAD]) == [HEAD]
    assert resolve_selectors(lite0_groups, ["last:2", HEAD]) == ["blocks.5", "blocks.6", HEAD]
    assert resolve_selectors(lite0_groups, ["all"])[0] == "stem"
    assert resolve_selectors(lite0_groups, ["blocks.3", "stem"]) == ["stem", "blocks.3"]  # model order


def test_unknown_group_lists_the_models_groups(lite0_groups) -> None:
    with pytest.raises(ValueError, match=r"unknown layer group 'blocks.9'.*'blocks.6'"):
        resolve_selectors(lite0_groups, ["blocks.9"])
    with pytest.raises(ValueError, match="N must be"):
        resolve_selectors(lite0_groups, ["last:0"])


@pytest.mark.parametrize("architecture", ["test_efficientnet", "test_resnet", "test_vit", "test_convnext"])
def test_groups_for_other_timm_families(architecture: str) -> None:
    groups = layer_groups(create_model(ModelSpec(architecture=architecture), 3))
    assert groups[-1].name == HEAD
    assert len(groups) >= 3
    assert len({g.name for g in groups}) == len(groups)


def test_unknown_architecture_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not a timm model"):
        create_model(ModelSpec(architecture="efficientnet_lite_zero"), 3)
