"""A self-contained HTML report (no network, no CDN): Jinja2 templating, matplotlib SVG plots, and a
little inline JavaScript for sorting, filtering, collapsing by depth and redrawing the coverage map.

Coverage in the report: for every row local along every axis, the per-axis path counts
(:meth:`convlens.Report.axis_profiles`) of up to ``MAX_UNITS`` units per axis, quantised to
0..255 per unit (zero stays zero, so holes are exact). The map drawn for a unit is the product of its
per-axis profiles: exact for separable networks, and its support is the unit's window along each
axis. Inputs longer than ``MAX_INPUT`` along an axis are drawn without coverage (too large to embed).
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConvlensError
from ..geometry import Local
from ..report import Report
from .figures import cost_figure, pyplot, rf_figure
from .files import write_text
from .format import axes_text, bytes_text, count_text, stride_text

MAX_UNITS = 16
MAX_INPUT = 1024
TEMPLATE = "report.html.j2"


def _env():
    try:
        import jinja2
    except ImportError:
        raise ConvlensError("the HTML report needs jinja2 and matplotlib: pip install 'convlens[report]'") from None
    return jinja2.Environment(loader=jinja2.PackageLoader("convlens.render", "templates"),
                              autoescape=jinja2.select_autoescape(["html", "j2"]))


def _sampled(n: int) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, min(n, MAX_UNITS)).round().astype(int).tolist()) | {n // 2})


def _profiles(report: Report) -> dict[str, Any]:
    """Row index -> per axis {units, data (base64 uint8, len(units) x N)}."""
    input_size = report.input_shape[2:]
    if any(n > MAX_INPUT for n in input_size) or len(input_size) > 2:
        return {}
    rows = [i for i, layer in enumerate(report) if layer.tensor is not None
            and all(isinstance(s, Local) for s in layer.axes)]
    found: dict[str, Any] = {}
    for a in range(len(input_size)):
        wanted = {i: _sampled(report[i].axes[a].n) for i in rows}
        for i, counts in report.axis_profiles(a, wanted).items():
            peak = counts.max(axis=1, keepdims=True)
            q = np.where(counts > 0, np.ceil(255 * counts / np.where(peak > 0, peak, 1)), 0).astype(np.uint8)
            found.setdefault(str(i), {})[str(a)] = {"units": wanted[i],
                                                    "data": base64.b64encode(q.tobytes()).decode("ascii")}
    return found


def _svg(fig) -> str:
    """Inline SVG (text drawn as paths; matplotlib's comments, which it escapes, are dropped). The
    same figure gives the same text: no date, element ids from a fixed salt (a report's hash then
    says whether it changed)."""
    import matplotlib
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "convlens"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return re.sub(r"<!--.*?-->", "", text[text.index("<svg"):], flags=re.S)


def _inline(fig) -> str | None:
    """A figure as inline SVG (closed afterwards); None stays None."""
    if fig is None:
        return None
    svg = _svg(fig)
    pyplot().close(fig)
    return svg


def _row(i: int, layer) -> dict[str, Any]:
    return {"i": i, "name": layer.name, "label": layer.name or "(model)", "op": layer.op, "depth": layer.depth,
            "shape": "×".join(map(str, layer.output_shape)), "rf": axes_text(layer.rf),
            "rf_max": max((r for r in layer.rf if isinstance(r, int)), default=-1),
            "stride": stride_text(layer), "params": layer.params, "params_text": count_text(layer.params),
            "macs": layer.macs, "macs_text": count_text(layer.macs), "bytes": layer.activation_bytes,
            "bytes_text": bytes_text(layer.activation_bytes), "notes": layer.notes,
            "flag": layer.aligned is False or any(r is None for r in layer.rf)}


def render_html(report: Report, erf=None, compact: bool = False) -> str:
    """The report as one HTML page (``compact``: summary and table only, no scripts: for Jupyter)."""
    env = _env()
    out = report.output
    rows = [_row(i, layer) for i, layer in enumerate(report)]
    index = {layer.name: i for i, layer in enumerate(report)}
    diagnostics = [{"kind": d.kind, "row": d.row, "label": d.row or "(model)", "message": d.message,
                    "i": index.get(d.row, index.get(d.row + "[0]"))} for d in report.diagnostics]
    t = report.totals
    summary = {"model": report.model, "input": "x".join(map(str, report.input_shape)),
               "output_stride": axes_text([("global" if r == "global" else s) for r, s in zip(out.rf, out.stride)]),
               "rf": axes_text(out.rf), "params": count_text(t.params), "macs": count_text(t.macs),
               "peak": bytes_text(t.peak_activation_bytes), "rows": len(report)}
    data = {"rows": [{k: r[k] for k in ("i", "name", "label", "depth", "shape", "rf")} for r in rows],
            "input": list(report.input_shape[2:])}
    if compact:
        return env.get_template(TEMPLATE).render(compact=True, summary=summary, notes=report.notes,
                                                 rows=[r for r in rows if r["depth"] <= 2], diagnostics=diagnostics)
    data["coverage"] = _profiles(report)
    if erf is not None:
        data["erf"] = {"layer": erf.layer, "i": index.get(erf.layer), "unit": list(erf.unit),
                       "shape": list(erf.map.shape),
                       "data": base64.b64encode(np.round(255 * erf.map / max(float(erf.map.max()), 1e-300))
                                                .astype(np.uint8).tobytes()).decode("ascii")}
    return env.get_template(TEMPLATE).render(compact=False, summary=summary, notes=report.notes, rows=rows,
                                             diagnostics=diagnostics, data=data, rf_plot=_inline(rf_figure(report)),
                                             cost_plot=_inline(cost_figure(report)),
                                             max_depth=max((r["depth"] for r in rows), default=0))


def save_html(report: Report, path: str | Path, erf=None) -> None:
    """Write the report's HTML page to ``path``, atomically (:mod:`convlens.render.files`)."""
    write_text(path, render_html(report, erf))
