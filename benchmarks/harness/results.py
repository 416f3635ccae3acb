"""Writing a benchmark's result: its report as `<name>.md` and its record as `<name>.json` in the results
folder, the report on stdout, and the record as the one JSON object printed last."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_result(out: str | Path, name: str, lines: list[str], record: dict[str, Any]) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.md").write_text("\n".join(lines) + "\n")
    (folder / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print("\n".join(lines))
    print(json.dumps(record))
