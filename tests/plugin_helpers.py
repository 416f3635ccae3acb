"""Test helpers for plugins: distributions that exist only as a dist-info folder on sys.path, and CSV
images for the example plugin's `example_csv_images` reader (tests/plugins/rooivalk_example_plugin)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_CLASSES, _draw


def fake_distribution(
    monkeypatch: pytest.MonkeyPatch,
    root: Path,
    name: str,
    entry_points: dict[str, dict[str, str]],
    modules: dict[str, str] | None = None,
) -> None:
    """Make `name` 1.0 an installed distribution for the rest of the test: real metadata that
    importlib.metadata finds on sys.path (no mock), declaring `entry_points` ({group: {name: value}}),
    with top-level `modules` ({module name: source}) beside it."""
    root.mkdir(parents=True, exist_ok=True)
    dist_info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = []
    for group, entries in entry_points.items():
        lines += [f"[{group}]", *(f"{entry} = {value}" for entry, value in entries.items()), ""]
    (dist_info / "entry_points.txt").write_text("\n".join(lines))
    for module, source in (modules or {}).items():
        (root / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(root))


def make_csv_images(path: Path, per_class: int = 20, size: int = 16, seed: int = 0, bad_rows: bool = True) -> Path:
    """A header, then `label,p0,...` rows of the tiny shapes (tests.conftest); with `bad_rows`, three rows
    the reader must quarantine (too few pixels, a value out of range, no label)."""
    rng = np.random.default_rng(seed)
    rows = ["label," + ",".join(f"p{i}" for i in range(size * size))]
    for kind in TINY_CLASSES:
        for _ in range(per_class):
            rows.append(kind + "," + ",".join(str(int(v)) for v in _draw(kind, size, rng).ravel()))
    if bad_rows:
        rows += ["circle,1,2,3", "square," + ",".join(["300"] * size * size), "," + ",".join(["0"] * size * size)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    return path
