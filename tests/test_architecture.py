"""The core's layers, checked from the source: every import in src/rooivalk (at module level, inside
functions, under TYPE_CHECKING) goes down the declared order or stays in its layer, and no two
modules import each other, directly or round a loop. docs/architecture.md draws the same order.

What it reads are import statements: a module name handed to a new process (torchrun's
`-m rooivalk.training.worker`) is a process boundary, not an import; and since Python runs a package's
`__init__` before any of its modules, the engine rule says what the engine's code depends on, not
every module the interpreter loads on the way.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Bottom to top. A module may import from its own layer and the layers below it, never above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("rooivalk", "rooivalk.plugins", "rooivalk.machine", "rooivalk.events"),
    ("rooivalk.storage", "rooivalk.plan"),
    ("rooivalk.tracking",),
    ("rooivalk.data",),
    ("rooivalk.models",),
    ("rooivalk.features",),
    ("rooivalk.training",),
    ("rooivalk.evaluation",),
    ("rooivalk.export",),
    ("rooivalk.monitoring",),
    ("rooivalk.search",),
    ("rooivalk.steps",),
    ("rooivalk._dev",),
    ("rooivalk.cli",),
)
# Only the CLI reaches the orchestration layer (its run/compile/submit commands, lazily).
ORCHESTRATION = ("kfp", "rooivalk_kfp", "components", "pipelines")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, module: str) -> Iterator[str]:
    """Every absolute module name `path` imports, wherever the import statement sits."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            # `from rooivalk import storage` imports the module rooivalk.storage
            yield from (f"{base}.{alias.name}" for alias in node.names)


def core_modules(root: Path) -> dict[str, Path]:
    """The core's modules under a source root: rooivalk and its subpackages (not rooivalk_kfp)."""
    return {module_name(path, root): path for path in (root / "rooivalk").rglob("*.py")}


def import_graph(root: Path) -> dict[str, set[str]]:
    """core module -> the core modules it imports."""
    modules = core_modules(root)

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {resolve(name) for name in imported_names(path, module)}
        graph[module] = {target for target in targets if target is not None and target != module}
    return graph


def first_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import loop (its modules, the first repeated at the end), or [] when there is none."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        return list(error.args[1])
    return []


def layer_of(module: str) -> int:
    """The layer of the longest declared prefix (rooivalk.tracking.buffer -> rooivalk.tracking)."""
    best, depth = -1, -1
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = level, prefix.count(".")
    if best < 0:
        raise LookupError(f"{module} is in no layer: add its package to LAYERS (and to docs/architecture.md)")
    return best


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )


def orchestration_imports(root: Path) -> list[str]:
    found = []
    for module, path in core_modules(root).items():
        if module == "rooivalk.cli" or module.startswith("rooivalk.cli."):
            continue
        for name in imported_names(path, module):
            if name.split(".")[0] in ORCHESTRATION:
                found.append(f"{module} -> {name}")
    return sorted(set(found))


def test_the_core_has_no_import_cycle() -> None:
    assert first_cycle(import_graph(SRC)) == []


def test_every_import_goes_down_the_layers() -> None:
    assert upward_imports(import_graph(SRC)) == []


# The engine trains any task through the Task interface: it never sees images, sensors or datasets.
ENGINE = "rooivalk.training.engine"
ENGINE_MAY_IMPORT = ("rooivalk.training.engine", "rooivalk.training.tasks.base", "rooivalk.models", "rooivalk.plan")
# Exactly these modules, not their packages: the bottom layers and the parent packages on the way.
ENGINE_MAY_IMPORT_ALSO = ("rooivalk", "rooivalk.storage", "rooivalk.events", "rooivalk.training")


def engine_imports_beyond_the_task_interface(graph: dict[str, set[str]]) -> list[str]:
    def allowed(target: str) -> bool:
        if target.startswith(("rooivalk.models.sensor", "rooivalk.models.fusion")):
            return False  # the multi-sensor models are the tasks' business
        prefixed = any(target == name or target.startswith(name + ".") for name in ENGINE_MAY_IMPORT)
        return prefixed or target in ENGINE_MAY_IMPORT_ALSO

    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module == ENGINE or module.startswith(ENGINE + ".")
        for target in targets
        if not allowed(target)
    )


def test_the_engine_knows_only_the_task_interface() -> None:
    assert engine_imports_beyond_the_task_interface(import_graph(SRC)) == []


def test_only_the_cli_reaches_the_orchestration_layer() -> None:
    assert orchestration_imports(SRC) == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checks_catch_a_cycle_hidden_in_a_function_and_an_upward_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "rooivalk/__init__.py": "",
            "rooivalk/tracking/__init__.py": "",
            "rooivalk/tracking/runs.py": "def load():\n    from rooivalk.models import load_model\n",
            "rooivalk/models/__init__.py": "from rooivalk.tracking import runs\n",
            "rooivalk/export/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import kfp\n",
            "rooivalk/training/__init__.py": "",
            "rooivalk/training/tasks/__init__.py": "",
            "rooivalk/training/tasks/base.py": "",
            "rooivalk/training/tasks/image.py": "",
            "rooivalk/training/engine/__init__.py": "",
            "rooivalk/training/engine/loop.py": "from rooivalk.training.tasks import base, image\n",
        },
    )
    graph = import_graph(root)
    assert set(first_cycle(graph)) == {"rooivalk.models", "rooivalk.tracking.runs"}
    assert upward_imports(graph) == ["rooivalk.tracking.runs -> rooivalk.models"]
    assert orchestration_imports(root) == ["rooivalk.export -> kfp"]
    assert engine_imports_beyond_the_task_interface(graph) == [
        "rooivalk.training.engine.loop -> rooivalk.training.tasks",
        "rooivalk.training.engine.loop -> rooivalk.training.tasks.image",
    ]
