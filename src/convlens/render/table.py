"""Terminal table (rich): name, op, output shape, rf, stride, params, MACs, then totals and notes."""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..plan import PlanResult
from ..report import Layer, Report

MAX_DIAGNOSTICS = 20
DEFAULT_DEPTH = 2
"""Rows shown by default: the model, its children and grandchildren (ResNet blocks, VGG stages'
layers). JSON and CSV always hold every row."""


def _axes(values, sep: str = "×") -> str:
    def one(v) -> str:
        if v is None:
            return "?"
        if isinstance(v, Fraction):
            return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"
        return str(v)
    return sep.join(one(v) for v in values)


def _count(n: int) -> str:
    for unit, size in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _stride(layer: Layer) -> str:
    return _axes(["global" if rf == "global" else s for rf, s in zip(layer.rf, layer.stride)])


def _console() -> Console:
    """stdout; at least 160 columns when it is not a terminal (files and pipes would wrap)."""
    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 160))


def render_table(report: Report, depth: int | None = DEFAULT_DEPTH, console: Console | None = None) -> None:
    """Print the report; ``depth`` limits rows to modules at most that deep (None: all)."""
    console = console or _console()
    title = Text(f"{report.model} on {'x'.join(map(str, report.input_shape))}")  # names are text, not markup
    table = Table(title=title, title_justify="left", header_style="bold")
    for column, justify in (("name", "left"), ("op", "left"), ("output shape", "left"), ("rf", "right"),
                            ("stride", "right"), ("params", "right"), ("MACs", "right")):
        table.add_column(column, justify=justify, no_wrap=column != "name")
    shown = [layer for layer in report if depth is None or layer.depth <= depth]
    for layer in shown:
        name = Text("  " * layer.depth + (layer.name or "(model)"))
        flag = " ⚠" if layer.aligned is False or any(rf is None for rf in layer.rf) else ""
        table.add_row(name, Text(layer.op + flag), "×".join(map(str, layer.output_shape)), _axes(layer.rf),
                      _stride(layer), _count(layer.params), _count(layer.macs))
    console.print(table)
    t = report.totals
    console.print(f"rows shown: {len(shown)} of {len(report)} (depth <= {depth})" if depth is not None
                  else f"rows: {len(report)}")
    console.print(f"total: params {_count(t.params)}, MACs {_count(t.macs)}, FLOPs {_count(t.flops)}, "
                  f"bias FLOPs {_count(t.bias_flops)}, peak activations {_bytes(t.peak_activation_bytes)}")
    out = report.output
    offset = _axes(["global" if rf == "global" else o for rf, o in zip(out.rf, out.offset)])
    console.print(Text(f"output: rf {_axes(out.rf)}, stride {_stride(out)}, offset {offset}"))
    for note in report.notes:
        console.print(Text(f"note: {note}"))
    if report.diagnostics:
        console.print(f"diagnostics ({len(report.diagnostics)}):")
        for d in report.diagnostics[:MAX_DIAGNOSTICS]:
            console.print(Text(f"  {d.row or '(model)'}: {d.message}"))
        if len(report.diagnostics) > MAX_DIAGNOSTICS:
            console.print(f"  ... and {len(report.diagnostics) - MAX_DIAGNOSTICS} more (JSON holds them all)")
    flagged = [layer for layer in report if layer.aligned is False]
    for layer in flagged[:10]:
        for note in layer.notes:
            if note.startswith("misaligned"):
                console.print(Text(f"{layer.name}: {note}"))


def render_zoo(reports: Mapping[str, Report], console: Console | None = None) -> None:
    """One row per zoo model: its input, output, the output's rf and stride, params and MACs."""
    from ..zoo import ZOO

    console = console or _console()
    table = Table(title="convlens zoo (random weights; every name works as MODEL)", title_justify="left",
                  header_style="bold")
    for column in ("name", "input", "output", "rf", "stride", "params", "MACs", "what"):
        table.add_column(column, justify="right" if column in ("rf", "stride", "params", "MACs") else "left",
                         no_wrap=column != "what")
    for name, report in reports.items():
        out = report.output
        table.add_row(Text(name), "×".join(map(str, report.input_shape[1:])), "×".join(map(str, out.output_shape[1:])),
                      _axes(out.rf), _stride(out), _count(report.totals.params), _count(report.totals.macs),
                      ZOO[name].summary)
    console.print(table)


def render_plan(result: PlanResult, console: Console | None = None) -> None:
    """The planned schedules, best first, then the exponential one for comparison."""
    console = console or _console()
    k = result.kernel
    table = Table(title=f"hole-free {k}x{k} dilation schedules for rf >= {result.target_rf}", title_justify="left",
                  header_style="bold")
    for column in ("", "dilations", "layers", "rf", "params", "covered / window"):
        table.add_column(column, justify="left" if column in ("", "dilations") else "right")
    rows = [(str(i), s) for i, s in enumerate(result.schedules, start=1)] + [("exp.", result.exponential)]
    for label, s in rows:
        table.add_row(label, ", ".join(map(str, s.dilations)), str(s.layers), str(s.rf), _count(s.params),
                      f"{s.covered} / {s.pixels}")
    console.print(table)
    console.print("every schedule's coverage is measured with convlens's coverage map; 'exp.' is the plain "
                  "1, 2, 4, ... schedule that reaches the target")
