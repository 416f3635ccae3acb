"""Import a repository script (manifests/, scripts/) from its path: they are run as files, not
installed as package modules, yet tests call their functions directly. (benchmarks/ is a package:
tests import its helper modules the ordinary way.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_script(path: Path, name: str) -> ModuleType:
    """The module at `path`, registered as `name` in sys.modules first (dataclasses and pickling
    look a module up by name while it executes)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None, path
    assert spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
