"""The HTML report as a person uses it: opened in headless Chromium (Debian's ``chromium``, driven by
Playwright), sorted, filtered, a module chosen, the map redrawn, with no console error.

Expected values come from the report object itself only where the page must show them (one row per
module); behaviour (sorting order, filtering, redrawing) is checked in the browser.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch.nn as nn
import torchvision

import convlens

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

# `make test` installs chromium first; under CI a missing browser fails the tests instead of skipping them
pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                reason="Debian's chromium is not installed (make test installs it)")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def _open(browser, path):
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    errors: list[str] = []
    dialogs: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: errors.append(f"network request {r.url}") if not r.url.startswith("file:") else None)
    page.goto(path.as_uri())
    return page, errors, dialogs


def _numbers(page, column: str) -> list[int]:
    return page.eval_on_selector_all("#modules tbody tr:not([hidden])",
                                      f"rs => rs.map(r => Number(r.dataset.{column}))")


def _check_report(browser, report: convlens.Report, tmp_path, shot: str):
    path = tmp_path / "report.html"
    report.save_html(path)
    page, errors, dialogs = _open(browser, path)
    # one row per module call
    assert page.locator("#modules tbody tr").count() == len(report)
    # sorting by MACs, both ways
    page.click("#modules th[data-key=macs]")
    macs = _numbers(page, "macs")
    assert macs == sorted(macs, reverse=True)
    page.click("#modules th[data-key=macs]")
    assert _numbers(page, "macs") == sorted(macs)
    # filtering
    page.fill("#filter", "conv")
    names = page.eval_on_selector_all("#modules tbody tr:not([hidden])",
                                      "rs => rs.map(r => [r.cells[0].textContent, r.dataset.op])")
    assert names and all("conv" in n.lower() or "conv" in op.lower() for n, op in names)
    assert len(names) < len(report)
    page.fill("#filter", "")
    # collapsing by depth
    page.select_option("#depth", "1")
    depths = page.eval_on_selector_all("#modules tbody tr:not([hidden])", "rs => rs.map(r => Number(r.dataset.depth))")
    assert depths and max(depths) <= 1 and len(depths) == sum(1 for layer in report if layer.depth <= 1)
    # choosing another module redraws the map
    options = page.eval_on_selector_all("#map-row option", "os => os.map(o => o.value)")
    assert len(options) >= 2
    page.select_option("#map-row", options[-1])
    before = page.evaluate("document.getElementById('coverage').toDataURL()")
    page.select_option("#map-row", options[1])
    after = page.evaluate("document.getElementById('coverage').toDataURL()")
    assert before != after and page.get_attribute("#coverage", "data-row") == options[1]
    # and another unit too
    page.fill("#unit-0", "0")
    page.dispatch_event("#unit-0", "input")
    assert page.evaluate("document.getElementById('coverage').toDataURL()") != after
    # a diagnostic's link selects its row
    links = page.locator("#diagnostics a[data-row]")
    if links.count():
        row = links.first.get_attribute("data-row")
        links.first.click()
        assert page.get_attribute(f"#modules tbody tr[data-i='{row}']", "class").split().count("selected") == 1
    page.screenshot(path=str(tmp_path / shot), full_page=True)
    assert not errors and not dialogs
    page.close()
    return path


def test_report_in_chromium(browser, tmp_path):
    report = convlens.analyze(torchvision.models.resnet18(weights=None), (1, 3, 96, 96))
    _check_report(browser, report, tmp_path, "resnet18.png")


def test_erf_is_drawn_beside_the_coverage(browser, tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 3, padding=2, dilation=2))
    report = convlens.analyze(model, (1, 1, 24, 24))
    report.save_html(tmp_path / "erf.html", erf=convlens.erf(model, (1, 1, 24, 24), samples=2))
    page, errors, dialogs = _open(browser, tmp_path / "erf.html")
    assert page.is_visible("#erf") and "ERF of (model) unit (12, 12)" in page.text_content("#erf-title")
    pixels = page.evaluate("""() => { const c = document.getElementById('erf');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (!(d[i] === 255 && d[i + 1] === 255 && d[i + 2] === 255)) n++;
        return n; }""")
    assert pixels > 0 and not errors and not dialogs
    page.close()


def test_densenet121_report_stays_small(browser, tmp_path):
    report = convlens.analyze(torchvision.models.densenet121(weights=None), (1, 3, 224, 224))
    assert len(report) > 400
    path = _check_report(browser, report, tmp_path, "densenet121.png")
    assert path.stat().st_size < 5 * 2**20


def test_module_names_are_text(browser, tmp_path):
    evil = "<script>alert(1)</script>"
    model = nn.Sequential()
    model.add_module(evil, nn.Conv2d(1, 2, 3))
    model.add_module("b", nn.Conv2d(2, 2, 3))
    report = convlens.analyze(model, (1, 1, 16, 16))
    path = tmp_path / "evil.html"
    report.save_html(path)
    page, errors, dialogs = _open(browser, path)
    assert page.locator("#modules tbody tr").first.locator("td").first.text_content() == "(model)"
    assert page.locator("#modules tbody tr").nth(1).locator("td").first.text_content() == evil
    labels = page.eval_on_selector_all("#map-row option", "os => os.map(o => o.textContent)")
    assert any(label.startswith(evil + "  (rf") for label in labels)
    assert not errors and not dialogs
    page.close()


def test_jupyter_repr_is_compact_and_escaped():
    model = nn.Sequential()
    model.add_module("<b>x</b>", nn.Conv2d(1, 1, 3))
    html = convlens.analyze(model, (1, 1, 8, 8))._repr_html_()
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert "<script" not in html
