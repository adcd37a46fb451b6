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


def _open(browser, path, width: int = 1300):
    page = browser.new_page(viewport={"width": width, "height": 1000})
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


def _painted(page, canvas_id: str) -> int:
    """Pixels of a canvas that are not white."""
    return page.evaluate("""id => { const c = document.getElementById(id);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (!(d[i] === 255 && d[i + 1] === 255 && d[i + 2] === 255)) n++;
        return n; }""", canvas_id)


def _box(page, selector: str) -> dict:
    return page.eval_on_selector(selector, "e => { const r = e.getBoundingClientRect(); "
                                           "return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; }")


LAYOUTS = {
    "2-D": (lambda: torchvision.models.resnet18(weights=None), (1, 3, 96, 96)),
    "1-D": (lambda: nn.Sequential(*[nn.Conv1d(2, 2, 3, dilation=d, padding=d) for d in (1, 2, 4)]), (1, 2, 2000)),
    "3-D": (lambda: nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.MaxPool3d(2), nn.Conv3d(2, 1, 3)),
            (1, 1, 12, 40, 40)),
}


@pytest.mark.parametrize("width", [1400, 900])
@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_layout_uses_the_page_and_never_overflows(browser, tmp_path, width, kind):
    build, shape = LAYOUTS[kind]
    report = convlens.analyze(build(), shape)
    report.save_html(tmp_path / "r.html")
    page, errors, dialogs = _open(browser, tmp_path / "r.html", width=width)
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing overflows sideways
    view, table = _box(page, "#unit-view"), _box(page, ".modules")
    if width >= 1200:  # the unit view beside the table, both from the same height on
        assert view["left"] >= table["right"] - 1 and view["top"] < table["bottom"] and table["top"] < view["bottom"]
    else:
        assert view["bottom"] <= table["top"] + 1  # above it, each as wide as the page allows
    assert _painted(page, "coverage") > 0 and _painted(page, "coverage-zoom") > 0
    assert page.is_visible("#slice") == (kind == "3-D")
    assert not errors and not dialogs
    page.close()


def test_a_corner_units_window_is_zoomed(browser, tmp_path):
    report = convlens.analyze(torchvision.models.resnet18(weights=None), (1, 3, 96, 96))
    report.save_html(tmp_path / "r.html")
    page, errors, dialogs = _open(browser, tmp_path / "r.html")
    row = str(next(i for i, layer in enumerate(report) if layer.name == "layer1"))
    page.select_option("#map-row", row)
    for a in (0, 1):
        page.fill(f"#unit-{a}", "0")
        page.dispatch_event(f"#unit-{a}", "input")
    window = report["layer1"].window(0, 0)
    assert page.text_content("#map-info").endswith(f"window [{window[0][0]}, {window[0][1]}] × "
                                                    f"[{window[1][0]}, {window[1][1]}]")
    # the whole input is drawn in about 320 px; the zoom shows the window and its margin as large
    side = window[0][1] - window[0][0] + 1
    assert page.evaluate("document.getElementById('coverage-zoom').width") >= 300
    assert page.evaluate("document.getElementById('coverage-zoom').width") / side >= \
        3 * page.evaluate("document.getElementById('coverage').width") / 96
    assert _painted(page, "coverage-zoom") > 0 and not errors and not dialogs
    page.close()


@pytest.mark.parametrize("length", [600, 3000])  # path counts; beyond MAX_INPUT the windows alone
def test_a_1d_model_is_a_strip(browser, tmp_path, length):
    from convlens.render.html import MAX_INPUT
    model = nn.Sequential(*[nn.Conv1d(2, 2, 3, dilation=d, padding=d) for d in (1, 2, 4, 8)])
    report = convlens.analyze(model, (1, 2, length))
    report.save_html(tmp_path / "r1.html")
    page, errors, dialogs = _open(browser, tmp_path / "r1.html", width=1400)
    assert page.evaluate("document.getElementById('coverage').height") == 28
    assert _painted(page, "coverage") > 0 and _painted(page, "coverage-zoom") > 0
    before = page.evaluate("document.getElementById('coverage-zoom').toDataURL()")
    page.fill("#unit-0", "0")
    page.dispatch_event("#unit-0", "input")
    assert page.evaluate("document.getElementById('coverage-zoom').toDataURL()") != before
    assert page.text_content("#map-info").startswith("unit (0), window [0, 15]")  # rf 31 at the border
    assert ("each unit's window" in page.text_content("#map-info")) == (length > MAX_INPUT)
    assert not errors and not dialogs
    page.close()


def test_a_3d_model_is_drawn_slice_by_slice(browser, tmp_path):
    model = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.Conv3d(2, 1, 3, padding=2, dilation=2))
    report = convlens.analyze(model, (1, 1, 12, 16, 16))
    report.save_html(tmp_path / "r3.html")
    page, errors, dialogs = _open(browser, tmp_path / "r3.html", width=1400)
    assert page.is_visible("#slice") and _painted(page, "coverage") > 0
    window = report[""].window(6, 8, 8)
    assert int(page.input_value("#slice")) == (window[0][0] + window[0][1]) // 2  # the window's middle
    page.fill("#slice", "0")  # outside this unit's window along axis 0: nothing reaches it there
    page.dispatch_event("#slice", "input")
    assert _painted(page, "coverage") == 0 and "outside the unit's window" in page.text_content("#slice-value")
    assert not errors and not dialogs
    page.close()


def test_jupyter_styles_stay_inside_the_report():
    import re
    html = convlens.analyze(nn.Conv2d(1, 1, 3), (1, 1, 8, 8))._repr_html_()
    assert html.lstrip().startswith('<div class="convlens')
    css = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    rules = re.sub(r"@media[^{]*{", "", css)
    selectors = [s.strip() for block in re.findall(r"([^{}]+){", rules) for s in block.split(",")]
    assert selectors and all(s.startswith(".convlens") for s in selectors), selectors


def test_the_readmes_pictures_show_the_current_report():
    # docs/screenshot.py writes the pictures and the hash of the HTML each shows: a change of the
    # report's HTML (template, data, plots) fails here until the pictures are regenerated
    import importlib.util
    from pathlib import Path
    docs = Path(__file__).resolve().parent.parent / "docs"
    spec = importlib.util.spec_from_file_location("screenshot", docs / "screenshot.py")
    screenshot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(screenshot)
    recorded = dict(line.split()[::-1] for line in (docs / "report.sha256").read_text().splitlines())
    for picture in screenshot.PICTURES:
        assert (docs / picture).exists()
        assert recorded[picture] == screenshot.digest(screenshot.report_html(picture)), \
            f"docs/{picture} is stale: run .venv/bin/python docs/screenshot.py"
