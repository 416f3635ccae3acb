"""Headless Chromium (Debian's `chromium`, installed by `make chromium`) for checking and photographing
the HTML training report: did every figure decode, and what does the page look like.

The report carries no script, so the check works on a copy: a small inline script is appended that, on
the window's load event (which waits for every <img>, data: URIs included), writes each image's
naturalWidth/naturalHeight onto its <figure>; `--dump-dom` then prints the DOM after that handler ran.
An image that fails to decode has naturalWidth 0. Flags keep the browser off the network and the user's
profile: the machine may be offline and a test must not touch ~/.config.
"""

from __future__ import annotations

import html.parser
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
_PROBE = """<script>
window.addEventListener("load", () => {
  for (const figure of document.querySelectorAll("figure[data-figure]")) {
    const img = figure.querySelector("img");
    figure.setAttribute("data-rendered", img && img.complete ? `${img.naturalWidth}x${img.naturalHeight}` : "0x0");
  }
  document.body.setAttribute("data-probed", "yes");
});
</script>"""


def find_chromium() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        if found := shutil.which(name):
            return found
    return None


def _run(browser: str, arguments: list[str], timeout: float) -> str:
    with tempfile.TemporaryDirectory(prefix="rooivalk-chromium-") as profile:
        done = subprocess.run(
            [browser, *_FLAGS, f"--user-data-dir={profile}", *arguments],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"{browser} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


class _Figures(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rendered: dict[str, tuple[int, int]] = {}
        self.probed = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "body" and values.get("data-probed") == "yes":
            self.probed = True
        if tag == "figure" and values.get("data-figure"):
            width, _, height = (values.get("data-rendered") or "0x0").partition("x")
            self.rendered[str(values["data-figure"])] = (int(width or 0), int(height or 0))


def rendered_figures(report: Path, browser: str, timeout: float = 60) -> dict[str, tuple[int, int]]:
    """data-figure key -> (naturalWidth, naturalHeight) of its image as Chromium decoded it; (0, 0) for an
    image that did not decode. Raises when the probe did not run (the page never finished loading)."""
    with tempfile.TemporaryDirectory(prefix="rooivalk-report-") as folder:
        probe = Path(folder) / "probe.html"
        text = report.read_text()
        probe.write_text(text.replace("</body>", f"{_PROBE}</body>", 1))
        dom = _run(browser, ["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], timeout)
    parser = _Figures()
    parser.feed(dom)
    if not parser.probed:
        raise RuntimeError(f"{report}: the load handler never ran in {browser}; DOM starts {dom[:300]!r}")
    return parser.rendered


def screenshot(
    report: Path, png: Path, browser: str, width: int = 1200, height: int = 3000, timeout: float = 60
) -> Path:
    """A PNG of the page's first `height` CSS pixels at `width` (headless Chromium has no full-page flag)."""
    png.parent.mkdir(parents=True, exist_ok=True)
    _run(
        browser,
        [f"--window-size={width},{height}", f"--screenshot={png.resolve()}", report.resolve().as_uri()],
        timeout,
    )
    return png
