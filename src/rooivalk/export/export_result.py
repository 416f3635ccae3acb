"""What an export step returns: metrics, artifacts, gates, the per-model choices and bundles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rooivalk.export.selection import ModelExport


@dataclass
class ExportResult:
    metrics: dict[str, float]
    artifacts: dict[str, str]  # file name -> path or URI
    gates: list[dict[str, Any]] = field(default_factory=list)
    choices: list[ModelExport] = field(default_factory=list)
    bundles: dict[str, str] = field(default_factory=dict)  # model name -> bundle folder or URI

    @property
    def passed(self) -> bool:
        return all(gate["passed"] for gate in self.gates)
