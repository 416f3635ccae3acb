"""Every KFP component runs a rooivalk image from components/images.py, tagged with the package version,
without installing kfp at run time; GPU steps run the GPU image. The check functions are also run on
throwaway components that break each rule."""

# No `from __future__ import annotations`: KFP reads the throwaway components' annotations as types.
import importlib
from pathlib import Path
from types import ModuleType

import pytest
from kfp import dsl
from kfp.dsl.base_component import BaseComponent

import rooivalk
from rooivalk_kfp.components import images

REPO = Path(__file__).resolve().parents[2]
COMPONENT_MODULES = sorted(
    path.stem for path in (REPO / "components").glob("*.py") if path.stem not in {"__init__", "images"}
)
IMAGES = {images.CPU_IMAGE, images.GPU_IMAGE}
# Where code that could choose an image lives. helm/ and manifests/ are left out: the chart and the
# kustomize overlays name the image repository in values, as deployment settings. tests/ and docs/
# quote the images on purpose.
SCANNED = ("components", "pipelines", "src", "benchmarks", "Makefile", "setup.py", "pyproject.toml")
SCANNED_SUFFIXES = {".py", ".yaml", ".yml", ".json", ".toml", ".cfg", ".sh", ""}


def _step_name(component: BaseComponent) -> str:
    """The function name (GPU_STEPS uses it); KFP's own name is the hyphenated form."""
    func = getattr(component, "python_func", None) or getattr(component, "pipeline_func", None)
    return func.__name__ if func is not None else component.name.replace("-", "_")


def components_of(module: ModuleType) -> dict[str, BaseComponent]:
    """The components a module defines (not those it imports from another module)."""
    found = {}
    for value in vars(module).values():
        func = getattr(value, "python_func", None) or getattr(value, "pipeline_func", None)
        if isinstance(value, BaseComponent) and (func is None or func.__module__ == module.__name__):
            found[_step_name(value)] = value
    return found


def image_problems(component: BaseComponent) -> list[str]:
    """Why a component breaks the image rules (empty: it follows them)."""
    name = _step_name(component)
    container = component.component_spec.implementation.container
    if container is None:
        return [f"{name}: not a container component (no image)"]
    problems = []
    image = container.image
    if image not in IMAGES:
        problems.append(f"{name}: image {image} is not one of components/images.py's {sorted(IMAGES)}")
    if image.rpartition(":")[2] != rooivalk.__version__:
        problems.append(f"{name}: image tag of {image} is not the package version {rooivalk.__version__}")
    expected = images.GPU_IMAGE if name in images.GPU_STEPS else images.CPU_IMAGE
    if image != expected:
        problems.append(f"{name}: runs {image}, expected {expected} (GPU_STEPS)")
    # install_kfp_package=True (and packages_to_install) put a pip install into the shell script that
    # starts the step; with False the script only writes the function's source and runs kfp's executor.
    # Python components: command = ["sh", "-c"/"-ec", script, function source]; only the script counts.
    command = list(container.command or [])
    script = command[2] if command[:1] == ["sh"] and len(command) > 2 else " ".join(command)
    if "pip install" in script or "ensurepip" in script:
        problems.append(f"{name}: installs packages at start-up (install_kfp_package must be False)")
    return problems


def hardcoded_images(root: Path, paths: tuple[str, ...]) -> list[str]:
    """Files under `paths` that spell out the image registry, apart from components/images.py."""
    allowed = root / "components" / "images.py"
    found = []
    for top in paths:
        start = root / top
        files = [start] if start.is_file() else sorted(start.rglob("*")) if start.is_dir() else []
        for path in files:
            if not path.is_file() or path == allowed or "__pycache__" in path.parts:
                continue
            if path.suffix in SCANNED_SUFFIXES and images.REGISTRY in path.read_text(errors="ignore"):
                found.append(path.relative_to(root).as_posix())
    return found


def _all_components() -> dict[str, BaseComponent]:
    found: dict[str, BaseComponent] = {}
    for module_name in COMPONENT_MODULES:
        found.update(components_of(importlib.import_module(f"rooivalk_kfp.components.{module_name}")))
    return found


@pytest.mark.parametrize("module_name", COMPONENT_MODULES)
def test_every_component_module_defines_a_component(module_name: str) -> None:
    module = importlib.import_module(f"rooivalk_kfp.components.{module_name}")
    assert components_of(module), f"components/{module_name}.py"


@pytest.mark.parametrize("module_name", COMPONENT_MODULES)
def test_components_follow_the_image_rules(module_name: str) -> None:
    module = importlib.import_module(f"rooivalk_kfp.components.{module_name}")
    problems = [problem for component in components_of(module).values() for problem in image_problems(component)]
    assert problems == []


def test_gpu_steps_name_existing_components() -> None:
    unknown = images.GPU_STEPS - set(_all_components())
    assert unknown == set(), f"GPU_STEPS names no component: {sorted(unknown)}"


def test_images_are_tagged_with_the_package_version() -> None:
    for image in IMAGES:
        assert image.startswith(images.REGISTRY + "/")
        assert image.endswith(":" + rooivalk.__version__)
    assert images.CPU_IMAGE != images.GPU_IMAGE


def test_no_other_file_hardcodes_the_image_registry() -> None:
    assert hardcoded_images(REPO, SCANNED) == []


# Throwaway components, each breaking one rule, for the negative cases.
@dsl.component(base_image="python:3.11", install_kfp_package=False)
def foreign_image(x: int) -> int:
    return x


@dsl.component(base_image=images.CPU_IMAGE)
def installs_kfp(x: int) -> int:
    return x


@dsl.component(base_image=images.CPU_IMAGE.rpartition(":")[0] + ":latest", install_kfp_package=False)
def stale_tag(x: int) -> int:
    return x


@dsl.component(base_image=images.CPU_IMAGE, install_kfp_package=False)
def train_model(x: int) -> int:  # a GPU step's name on the CPU image
    return x


@dsl.component(base_image=images.GPU_IMAGE, install_kfp_package=False)
def ingest_data(x: int) -> int:  # a CPU step on the GPU image
    return x


@pytest.mark.parametrize(
    ("component", "expected"),
    [
        (foreign_image, "is not one of"),
        (foreign_image, "not the package version"),
        (installs_kfp, "install_kfp_package"),
        (stale_tag, "not the package version"),
        (train_model, "expected " + images.GPU_IMAGE),
        (ingest_data, "expected " + images.CPU_IMAGE),
    ],
)
def test_image_problems_reports_a_bad_component(component: BaseComponent, expected: str) -> None:
    problems = image_problems(component)
    assert any(expected in problem for problem in problems), problems


def test_a_module_without_components_is_reported() -> None:
    assert components_of(ModuleType("rooivalk_kfp.components.empty")) == {}


def test_hardcoded_images_reports_a_copy(tmp_path: Path) -> None:
    (tmp_path / "components").mkdir()
    (tmp_path / "components" / "images.py").write_text(f'REGISTRY = "{images.REGISTRY}"\n')
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "extra.py").write_text(f'IMAGE = "{images.CPU_IMAGE}"\n')
    assert hardcoded_images(tmp_path, ("components", "pipelines")) == ["pipelines/extra.py"]
