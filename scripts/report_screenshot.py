#!/usr/bin/env python3
"""The HTML training report of a run folder, checked and photographed in headless Chromium: writes
<out>/<name>.html (the report, self-contained), <out>/<name>.png (the whole page, trailing blank rows
trimmed) and prints one JSON object last: every figure's decoded size and the seconds each part took.
The run folder is only read (the report's lineage reads the MLflow sqlite store read-only).

    .venv/bin/python scripts/report_screenshot.py runs/demo-issue28 docs/results/training_report --name counter_drone
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from rooivalk._dev.browser import find_chromium, rendered_figures, screenshot
from rooivalk.cli.report_html import write_html_report

WIDTH = 1100
MAX_HEIGHT = 16000  # CSS pixels: taller than any report so far; the blank rest is trimmed


def trim_bottom(png: Path) -> tuple[int, int]:
    """Cut the white rows below the page's last content (headless Chromium shoots the whole window)."""
    image = Image.open(png).convert("RGB")
    rows = np.flatnonzero((np.asarray(image) < 250).any(axis=(1, 2)))
    bottom = int(rows[-1]) + 24 if rows.size else image.height
    # a 256-colour palette: a third of the bytes; flat colours and anti-aliased lines lose nothing visible
    cropped = image.crop((0, 0, image.width, min(bottom, image.height)))
    cropped.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(png, optimize=True)
    return image.width, min(bottom, image.height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--name", default="report")
    args = parser.parse_args()
    browser = find_chromium()
    if browser is None:
        raise SystemExit("chromium not found: `make chromium` installs Debian's")
    started = time.perf_counter()
    html = write_html_report(args.run_dir, args.out_dir / f"{args.name}.html")
    rendered_at = time.perf_counter()
    figures = rendered_figures(html, browser)
    checked_at = time.perf_counter()
    png = screenshot(html, args.out_dir / f"{args.name}.png", browser, width=WIDTH, height=MAX_HEIGHT)
    size = trim_bottom(png)
    result = {
        "run_dir": str(args.run_dir),
        "html": str(html),
        "html_bytes": html.stat().st_size,
        "screenshot": str(png),
        "screenshot_px": size,
        "figures": {key: f"{w}x{h}" for key, (w, h) in figures.items()},
        "all_rendered": all(w > 0 and h > 0 for w, h in figures.values()),
        "render_seconds": round(rendered_at - started, 2),
        "chromium_check_seconds": round(checked_at - rendered_at, 2),
        "screenshot_seconds": round(time.perf_counter() - checked_at, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
