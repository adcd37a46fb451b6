"""Terminal table (rich): name, op, output shape, rf, stride, params, MACs, then totals and notes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..report import Report
from .format import axes_text, bytes_text, count_text, stride_text

if TYPE_CHECKING:
    from ..plan import PlanResult

MAX_DIAGNOSTICS = 20
DEFAULT_DEPTH = 2
"""Rows shown by default: the model, its children and grandchildren (ResNet blocks, VGG stages'
layers). JSON and CSV always hold every row."""


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
        table.add_row(name, Text(layer.op + flag), "×".join(map(str, layer.output_shape)), axes_text(layer.rf),
                      stride_text(layer), count_text(layer.params), count_text(layer.macs))
    console.print(table)
    t = report.totals
    console.print(f"rows shown: {len(shown)} of {len(report)} (depth <= {depth})" if depth is not None
                  else f"rows: {len(report)}")
    console.print(f"total: params {count_text(t.params)}, MACs {count_text(t.macs)}, FLOPs {count_text(t.flops)}, "
                  f"bias FLOPs {count_text(t.bias_flops)}, peak activations {bytes_text(t.peak_activation_bytes)}")
    out = report.output
    offset = axes_text(["global" if rf == "global" else o for rf, o in zip(out.rf, out.offset)])
    console.print(Text(f"output: rf {axes_text(out.rf)}, stride {stride_text(out)}, offset {offset}"))
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


def render_zoo(reports: Mapping[str, Report], summaries: Mapping[str, str], console: Console | None = None) -> None:
    """One row per zoo model: its input, output, the output's rf and stride, params, MACs and
    ``summaries[name]``."""
    console = console or _console()
    table = Table(title="convlens zoo (random weights; every name works as MODEL)", title_justify="left",
                  header_style="bold")
    for column in ("name", "input", "output", "rf", "stride", "params", "MACs", "what"):
        table.add_column(column, justify="right" if column in ("rf", "stride", "params", "MACs") else "left",
                         no_wrap=column != "what")
    for name, report in reports.items():
        out = report.output
        table.add_row(Text(name), "×".join(map(str, report.input_shape[1:])), "×".join(map(str, out.output_shape[1:])),
                      axes_text(out.rf), stride_text(out), count_text(report.totals.params),
                      count_text(report.totals.macs), Text(summaries.get(name, "")))
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
        table.add_row(label, ", ".join(map(str, s.dilations)), str(s.layers), str(s.rf), count_text(s.params),
                      f"{s.covered} / {s.pixels}")
    console.print(table)
    console.print("every schedule's coverage is measured with convlens's coverage map; 'exp.' is the plain "
                  "1, 2, 4, ... schedule that reaches the target")
