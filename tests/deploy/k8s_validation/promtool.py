"""`promtool check rules` on the rule groups of every rendered PrometheusRule."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from .render import Doc, ToolMissingError
from .schema import label

PROMTOOL = Path("/usr/bin/promtool")


def promtool_binary() -> Path:
    found = PROMTOOL if PROMTOOL.is_file() else shutil.which("promtool")
    if not found:
        raise ToolMissingError("promtool not found (`make tools` installs Debian's prometheus package)")
    return Path(found)


def check_rules(docs: tuple[Doc, ...] | list[Doc]) -> list[str]:
    """promtool's complaints about each PrometheusRule's spec.groups (a rule file body)."""
    errors = []
    binary = promtool_binary()
    with tempfile.TemporaryDirectory(prefix="rooivalk-rules-") as tmp:
        for index, doc in enumerate(d for d in docs if d.get("kind") == "PrometheusRule"):
            path = Path(tmp) / f"rules-{index}.yaml"
            path.write_text(yaml.safe_dump({"groups": (doc.get("spec") or {}).get("groups") or []}))
            result = subprocess.run(
                [str(binary), "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
            )
            if result.returncode != 0:
                output = (result.stdout + result.stderr).replace(str(path), "spec.groups").strip()
                errors.append(f"{label(doc)}: promtool check rules failed:\n{output}")
    return errors
