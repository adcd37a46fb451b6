"""A self-contained HTML report (no network, no CDN): Jinja2 templating, matplotlib SVG plots, and a
little inline JavaScript for sorting, filtering, collapsing by depth and redrawing the coverage map.

Coverage in the report: for every row local along every axis, the per-axis path counts
(:meth:`convlens.Report.axis_profiles`) of up to ``MAX_UNITS`` units per axis, quantised to
0..255 per unit (zero stays zero, so holes are exact), each kept over its support only (from the
first to the last pixel with a path). The map drawn for a unit is the product of its per-axis
profiles: exact for separable networks, and its support is the unit's window along each axis. 1-D
inputs are drawn as a strip, 3-D inputs one slice of axis 0 at a time. Rows are embedded in order
until ``MAX_EMBED`` bytes of profiles. Path counts cost time that grows faster than the input's
length, so an input longer than ``MAX_INPUT`` along some axis gets each sampled unit's clipped window
instead (drawn flat, and the page says so).

The page is one scoped element (``.convlens``): its styles touch nothing outside it, so the compact
view (``Report._repr_html_``) sits in a notebook without restyling it.
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
from .format import axes_text, bytes_text, count_text, stride_text, summary_lines

MAX_UNITS = 16
MAX_INPUT = 1024
"""Input pixels along an axis up to which the report embeds path counts (else the windows alone)."""
MAX_EMBED = 8 << 20
"""Bytes of coverage profiles a report embeds at most (rows after that have no unit view)."""
TEMPLATE = "report.html.j2"


def _env():
    try:
        import jinja2
    except ImportError:
        raise ConvlensError("jinja2, a dependency of convlens, is missing: pip install jinja2") from None
    return jinja2.Environment(loader=jinja2.PackageLoader("convlens.render", "templates"),
                              autoescape=jinja2.select_autoescape(["html", "j2"]))


def _sampled(n: int) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, min(n, MAX_UNITS)).round().astype(int).tolist()) | {n // 2})


def _profiles(report: Report) -> dict[str, Any]:
    """Row index -> per axis {units, starts, lengths, data}: for each sampled unit its profile from
    ``start`` over ``length`` input pixels (base64 uint8, the units' profiles one after another)."""
    input_size = report.input_shape[2:]
    rows = [i for i, layer in enumerate(report) if layer.tensor is not None
            and all(isinstance(s, Local) for s in layer.axes)]
    if any(n > MAX_INPUT for n in input_size):
        return {str(i): _windows(report[i]) for i in rows}
    per_axis = {a: report.axis_profiles(a, {i: _sampled(report[i].axes[a].n) for i in rows})
                for a in range(len(input_size))}
    found: dict[str, Any] = {}
    embedded = 0
    for i in rows:
        if embedded > MAX_EMBED or not all(i in per_axis[a] for a in per_axis):
            continue
        axes = {}
        for a, profiles in per_axis.items():
            counts = profiles[i]
            peak = counts.max(axis=1, keepdims=True)
            q = np.where(counts > 0, np.ceil(255 * counts / np.where(peak > 0, peak, 1)), 0).astype(np.uint8)
            starts, lengths, parts = [], [], []
            for row in q:
                nonzero = np.flatnonzero(row)
                lo, hi = (int(nonzero[0]), int(nonzero[-1]) + 1) if len(nonzero) else (0, 0)
                starts.append(lo)
                lengths.append(hi - lo)
                parts.append(row[lo:hi].tobytes())
            data = b"".join(parts)
            embedded += len(data)
            axes[str(a)] = {"units": _sampled(report[i].axes[a].n), "starts": starts, "lengths": lengths,
                            "data": base64.b64encode(data).decode("ascii")}
        found[str(i)] = axes
    return found


def _windows(layer) -> dict[str, Any]:
    """:func:`_profiles`'s entry of a row, from the sampled units' clipped windows alone (``flat``:
    no path counts; each axis read with the other axes at their centre unit)."""
    centre = [s.n // 2 for s in layer.axes]
    axes = {}
    for a, state in enumerate(layer.axes):
        units, starts, lengths = _sampled(state.n), [], []
        for u in units:
            window = layer.window(*(u if b == a else c for b, c in enumerate(centre)))
            lo, hi = window[a] if window is not None else (0, -1)
            starts.append(lo)
            lengths.append(hi - lo + 1)
        axes[str(a)] = {"units": units, "starts": starts, "lengths": lengths, "data": "", "flat": True}
    return axes


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


def _args(layer) -> str:
    """A leaf conv's or pool's own arguments in a few characters: '3×3 /2 pad 1 dil 2 g 32'."""
    args = layer.args
    if args is None:
        return ""
    text = axes_text(args.kernel)
    if any(s != 1 for s in args.stride):
        text += f" /{axes_text(args.stride)}"
    if any(p != (0, 0) for p in args.padding):
        text += " pad " + "×".join(str(a) if a == b else f"{a}/{b}" for a, b in args.padding)
        text += "" if args.padding_mode == "zeros" else f" {args.padding_mode}"
    if any(d != 1 for d in args.dilation):
        text += f" dil {axes_text(args.dilation)}"
    if args.groups not in (None, 1):
        text += f" g {args.groups}"
    return text + (" transposed" if args.transposed else "")


def _row(i: int, layer) -> dict[str, Any]:
    return {"i": i, "name": layer.name, "label": layer.name or "(model)", "op": layer.op, "layer": layer.type,
            "args": _args(layer), "depth": layer.depth,
            "shape": "×".join(map(str, layer.output_shape)), "rf": axes_text(layer.rf),
            "rf_max": max((r for r in layer.rf if isinstance(r, int)), default=-1),
            "stride": stride_text(layer), "params": layer.params, "params_text": count_text(layer.params),
            "macs": layer.macs, "macs_text": count_text(layer.macs), "bytes": layer.activation_bytes,
            "bytes_text": bytes_text(layer.activation_bytes), "notes": layer.notes,
            "flag": layer.aligned is False or any(r is None for r in layer.rf)}


def render_html(report: Report, erf=None, compact: bool = False) -> str:
    """The report as one HTML page (``compact``: summary and table only, no scripts: for Jupyter)."""
    env = _env()
    rows = [_row(i, layer) for i, layer in enumerate(report)]
    index = {layer.name: i for i, layer in enumerate(report)}
    diagnostics = [{"kind": d.kind, "row": d.row, "label": d.row or "(model)", "message": d.message,
                    "i": index.get(d.row, index.get(d.row + "[0]"))} for d in report.diagnostics]
    t = report.totals
    lines = summary_lines(report)  # the table's: the output's geometry, and a classifier's last local row
    summary = {"model": report.model, "input": "x".join(map(str, report.input_shape)),
               "output": lines[0].removeprefix("output: "),
               "last_local": lines[1].removeprefix("last local row, ") if len(lines) > 1 else None,
               "params": count_text(t.params), "rows": len(report),
               "macs": count_text(t.macs) if t.before_stop is None else f"{count_text(t.before_stop.macs)} before the stop",
               "peak": bytes_text(t.peak_activation_bytes) if t.before_stop is None
               else f"{bytes_text(t.before_stop.peak_activation_bytes)} before the stop"}
    flagged = any(r["flag"] for r in rows)
    data = {"rows": [{k: r[k] for k in ("i", "name", "label", "depth", "shape", "rf")} for r in rows],
            "input": list(report.input_shape[2:]), "max_input": MAX_INPUT}
    if compact:
        return env.get_template(TEMPLATE).render(compact=True, summary=summary, notes=report.notes, flagged=flagged,
                                                 rows=[r for r in rows if r["depth"] <= 2], diagnostics=diagnostics)
    data["coverage"] = _profiles(report)
    if erf is not None:
        data["erf"] = {"layer": erf.layer, "i": index.get(erf.layer), "unit": list(erf.unit),
                       "shape": list(erf.map.shape),
                       "data": base64.b64encode(np.round(255 * erf.map / max(float(erf.map.max()), 1e-300))
                                                .astype(np.uint8).tobytes()).decode("ascii")}
    return env.get_template(TEMPLATE).render(compact=False, summary=summary, notes=report.notes, rows=rows, flagged=flagged,
                                             diagnostics=diagnostics, data=data, rf_plot=_inline(rf_figure(report)),
                                             cost_plot=_inline(cost_figure(report)),
                                             max_depth=max((r["depth"] for r in rows), default=0))


def save_html(report: Report, path: str | Path, erf=None) -> None:
    """Write the report's HTML page to ``path``, atomically (:mod:`convlens.render.files`)."""
    write_text(path, render_html(report, erf))
