"""Screenshot of an HTML report in headless Chromium (Debian's ``chromium``, driven by Playwright).

    python docs/screenshot.py docs/report.html docs/report.png
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def main(html: str, png: str) -> int:
    chromium = shutil.which("chromium")
    if chromium is None:
        print("screenshot: Debian's chromium is not installed (apt-get install -y chromium)", file=sys.stderr)
        return 2
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1500})
        page.goto(Path(html).resolve().as_uri())
        page.screenshot(path=png)
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
