"""The training report's parts, whatever renders them: figures, tables and sections (rooivalk.cli.report_sections
builds them, rooivalk.cli.report_html and the Markdown report render them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Row = list[str]


@dataclass
class Figure:
    key: str  # the stable data-figure attribute, e.g. "training-optical"
    caption: str
    alt: str
    png: bytes


@dataclass
class Table:
    header: Row
    rows: list[Row]


@dataclass
class Section:
    title: str
    parts: list[str | Table | Figure] = field(default_factory=list)


def cell(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, int | float) else "-"
