"""Time of the unit-level queries: coverage maps and the effective receptive field.

    python benchmarks/bench_units.py          # prints a markdown table

* coverage: ``report.coverage(layer, centre)`` after ``convlens.analyze`` (not timed), against the
  brute-force way to get the same map: one forward and backward of the all-ones, one-channel network
  at full size (what the gradient oracle does). No peer tool computes coverage.
* ERF: ``convlens.erf`` per image against one plain forward + backward per image of the same model at
  the same batch size (the floor for any gradient-based ERF).
* HTML: writing densenet121's report against analyzing it; its load in headless Chromium against the
  same rows as a bare HTML table.

Each row is the median of ``--repeats`` runs in this process, after one warm-up run. Quote ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torchvision

import convlens


def _median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _dilated(n_layers: int = 20) -> nn.Module:
    rates = [1, 2, 4, 8, 16]
    return nn.Sequential(*[nn.Conv2d(1, 1, 3, dilation=rates[i % 5], padding=rates[i % 5], bias=False)
                           for i in range(n_layers)])


def _brute_force(model: nn.Module, shape):
    """All-ones weights, one forward and backward from the centre unit: the same path counts."""
    def run():
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(1.0)
        x = torch.ones(shape, requires_grad=True)
        out = model(x)
        centre = tuple(n // 2 for n in out.shape[2:])
        out[(0, slice(None), *centre)].sum().backward()
        return x.grad
    return run


def coverage_rows(repeats: int) -> list[tuple[str, float, float]]:
    rows = []
    model = _dilated()
    for size in (1024, 4096):
        shape = (1, 1, size, size)
        report = convlens.analyze(model, shape)
        t_cov = _median_time(lambda: report.coverage(""), repeats)
        t_brute = _median_time(_brute_force(_dilated(), shape), max(1, repeats // 2))
        rows.append((f"coverage, 20 dilated 3x3 layers (rates 1..16), {size}x{size}", t_cov, t_brute))
    for name, shape, layer in (("resnet50", (1, 3, 224, 224), "layer4"),
                               ("resnet50", (1, 3, 1024, 1024), "layer3")):
        with torch.device("meta"):
            m = torchvision.models.get_model(name, weights=None)
        report = convlens.analyze(m, shape)
        t_cov = _median_time(lambda: report.coverage(layer), repeats)
        rows.append((f"coverage, {name} {layer}, {shape[2]}x{shape[3]} (dense box after the merges)", t_cov,
                     float("nan")))
    return rows


def erf_rows(repeats: int, samples: int = 16, batch: int = 8) -> list[tuple[str, float, float]]:
    rows = []
    for name, shape, layer in (("resnet18", (1, 3, 224, 224), "layer3"),
                               ("resnet50", (1, 3, 224, 224), "layer4")):
        model = torchvision.models.get_model(name, weights=None).eval()
        t_erf = _median_time(lambda: convlens.erf(model, shape, layer=layer, samples=samples, batch_size=batch,
                                                  progress=False), repeats) / samples

        def plain():
            x = torch.randn(batch, *shape[1:], requires_grad=True)
            model(x).sum().backward()
        t_plain = _median_time(plain, repeats) / batch
        rows.append((f"ERF per image, {name} {layer}, 224x224, batch {batch}", t_erf, t_plain))
    return rows


def html_rows(repeats: int) -> list[tuple[str, float, float]]:
    """The HTML report of densenet121 (433 rows): writing it against analyzing, and its load time in
    headless Chromium against loading the same rows as a bare HTML table (when chromium is installed)."""
    import shutil
    import tempfile
    from pathlib import Path

    with torch.device("meta"):
        model = torchvision.models.densenet121(weights=None)
    shape = (1, 3, 224, 224)
    t_analyze = _median_time(lambda: convlens.analyze(model, shape), repeats)
    report = convlens.analyze(model, shape)
    tmp = Path(tempfile.mkdtemp())
    page_path, bare_path = tmp / "report.html", tmp / "bare.html"
    t_save = _median_time(lambda: report.save_html(page_path), repeats)
    rows = [(f"HTML report, densenet121 224x224 ({len(report)} rows, "
             f"{page_path.stat().st_size / 2**20:.1f} MiB): save_html vs analyze", t_save, t_analyze)]
    chromium = shutil.which("chromium")
    if chromium is None:
        return rows
    import html
    bare_path.write_text("<table>" + "".join(f"<tr><td>{html.escape(x.name)}</td><td>{x.op}</td></tr>"
                                             for x in report) + "</table>")
    from playwright.sync_api import sync_playwright
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=flags)

        def load(path):
            def run():
                page = browser.new_page()
                page.goto(path.as_uri(), wait_until="load")
                page.close()
            return run
        t_page = _median_time(load(page_path), repeats)
        t_bare = _median_time(load(bare_path), repeats)
        browser.close()
    rows.append(("HTML report, densenet121: Chromium load vs the same rows as a bare table", t_page, t_bare))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print("| case | convlens | reference | convlens / reference |")
    print("|---|---|---|---|")
    for label, ours, ref in (coverage_rows(args.repeats) + erf_rows(max(1, args.repeats // 2))
                             + html_rows(max(1, args.repeats // 2))):
        ratio = "–" if ref != ref else f"{ours / ref:.2g}x"
        ref_text = "–" if ref != ref else f"{ref * 1000:.1f} ms"
        print(f"| {label} | {ours * 1000:.1f} ms | {ref_text} | {ratio} |", flush=True)
    print("\nreference: coverage rows -> one forward+backward of the all-ones one-channel net (brute force); "
          "ERF rows -> one plain forward+backward per image at the same batch size; HTML rows as labelled.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
