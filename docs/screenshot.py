"""The README's pictures of the HTML report, screenshotted in headless Chromium (Debian's
``chromium``, driven by Playwright), 1400 px wide:

- docs/report.png: the built-in model, as ``convlens analyze --html`` writes it;
- docs/report_1d.png: the zoo's WaveNet (a 1-D model: its units drawn as strips);
- docs/report_3d.png: a small 3-D conv net (one slice of axis 0 at a time).

    .venv/bin/python docs/screenshot.py              # regenerates the three pictures
    .venv/bin/python docs/screenshot.py HTML PNG     # a screenshot of any report

docs/report.sha256 holds the hash of each picture's HTML: tests/test_html.py fails when a report's
HTML changes, so that the pictures are regenerated with it.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
HASHES = HERE / "report.sha256"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
WIDTH = 1400


def _volume_net():
    import torch.nn as nn
    return nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
                         nn.Conv3d(8, 8, 3, padding=2, dilation=2), nn.ReLU(), nn.Conv3d(8, 2, 1))


def report_html(picture: str) -> str:
    """The HTML report a picture shows ('report.png', 'report_1d.png' or 'report_3d.png')."""
    import torch

    import convlens
    from convlens.defaults import DEFAULT_MODEL
    from convlens.render.html import render_html
    from convlens.zoo import BUILTIN, DEFAULT_INPUT
    name, shape = {"report.png": (DEFAULT_MODEL, None), "report_1d.png": ("wavenet", None),
                   "report_3d.png": ("volume", (1, 24, 48, 48))}[picture]
    if name == "volume":
        model = _volume_net()
    else:
        with torch.device("meta"):
            model = BUILTIN[name]()
        shape = tuple(DEFAULT_INPUT[name])
    return render_html(convlens.analyze(model, (1, *shape), name=name))


PICTURES = ("report.png", "report_1d.png", "report_3d.png")


def digest(html: str) -> str:
    return hashlib.sha256(html.encode("utf-8")).hexdigest()


def screenshot(html: Path, png: Path) -> None:
    from playwright.sync_api import sync_playwright
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("screenshot: Debian's chromium is not installed (apt-get install -y chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": WIDTH, "height": 1500})
        page.goto(html.resolve().as_uri())
        page.screenshot(path=str(png))
        browser.close()


def main(argv: list[str]) -> int:
    if argv:
        screenshot(Path(argv[0]), Path(argv[1]))
        return 0
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for picture in PICTURES:
            html = report_html(picture)
            page = Path(tmp) / picture.replace(".png", ".html")
            page.write_text(html, encoding="utf-8")
            screenshot(page, HERE / picture)
            lines.append(f"{digest(html)}  {picture}")
    HASHES.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
