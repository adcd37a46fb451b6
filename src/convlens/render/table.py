"""Terminal table (rich): name and the chosen columns (layer, output shape, rf, stride, params, MACs by
default), then totals, the output's geometry, notes and diagnostics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..defaults import DEFAULT_COLUMNS, DEFAULT_DEPTH
from ..errors import ConvlensError
from ..geometry import Constant
from ..report import Layer, Report
from .format import axes_text, bytes_text, count_text, stride_text, summary_lines, totals_text

if TYPE_CHECKING:
    from ..plan import PlanResult

MAX_DIAGNOSTICS = 20


@dataclass(frozen=True)
class Column:
    """One column the module table can show: its header, its cell for a row, right-aligned or not."""

    header: str
    cell: Callable[[Layer], str]
    numeric: bool = True


def _args_text(layer: Layer, field: str) -> str:
    """A leaf conv's or pool's own argument per dim ('3×3'); padding 'before/after' where the sides
    differ, with the mode where it is not zeros ('1×1 reflect'); '' for other rows."""
    args = layer.args
    if args is None or (field == "groups" and args.groups is None):
        return ""
    if field == "padding":
        text = "×".join(str(a) if a == b else f"{a}/{b}" for a, b in args.padding)
        return text if args.padding_mode == "zeros" else f"{text} {args.padding_mode}"
    if field == "groups":
        return str(args.groups)
    return axes_text(getattr(args, field))


def _global_once(text: str) -> str:
    """'global' for 'global×global' (a row global along every axis)."""
    return "global" if set(text.split("×")) == {"global"} else text


def _geometry(text: Callable[[Layer], str]) -> Callable[[Layer], str]:
    """A geometry cell: '-' for a row that does not depend on the grid input at all (a constant, or a
    branch of another input), else ``text``."""
    return lambda x: "-" if _ungridded(x) else _global_once(text(x))


def _ungridded(layer: Layer) -> bool:
    return bool(layer.axes) and all(isinstance(s, Constant) for s in layer.axes)


COLUMNS: dict[str, Column] = {
    "layer": Column("layer", lambda x: x.type, numeric=False),
    "op": Column("op", lambda x: x.op, numeric=False),
    "output_shape": Column("output shape", lambda x: "×".join(map(str, x.output_shape)), numeric=False),
    "rf": Column("rf", _geometry(lambda x: axes_text(x.rf))),
    "stride": Column("stride", _geometry(stride_text)),
    "offset": Column("offset", _geometry(lambda x: axes_text(["global" if rf == "global" else o
                                                              for rf, o in zip(x.rf, x.offset)]))),
    "params": Column("params", lambda x: count_text(x.params)),
    "macs": Column("MACs", lambda x: count_text(x.macs)),
    "activation": Column("activation", lambda x: bytes_text(x.activation_bytes)),
    "kernel": Column("kernel", lambda x: _args_text(x, "kernel")),
    "layer_stride": Column("layer stride", lambda x: _args_text(x, "stride")),
    "padding": Column("padding", lambda x: _args_text(x, "padding")),
    "dilation": Column("dilation", lambda x: _args_text(x, "dilation")),
    "groups": Column("groups", lambda x: _args_text(x, "groups")),
}
"""The table's columns by the name ``--columns`` takes (``name`` is always shown, first), in the order
of :data:`convlens.defaults.COLUMN_NAMES` (which the CLI offers without importing this module).
``stride`` is the effective stride in input pixels; ``layer_stride`` a conv's or pool's own."""

DROP_ORDER = ("op", "activation", "groups", "dilation", "padding", "layer_stride", "kernel", "offset", "params",
              "output_shape", "layer", "macs", "stride", "rf")
"""Where the terminal is too narrow for the chosen columns, they are dropped in this order (the
least asked-for first) until the table fits; the name column is never dropped and folds long names
onto more lines; no number is ever cut."""

NAME_WIDTH = 16
"""The name column folds names longer than this where the terminal is narrow (and no narrower)."""

FLAG = "⚠"
LEGEND = f"{FLAG}: the row holds a misaligned merge or an axis convlens cannot follow (its notes say which)"


def check_columns(columns: Sequence[str]) -> tuple[str, ...]:
    """Column names as given, each known (a :class:`ConvlensError` names the unknown and the choices)."""
    unknown = [c for c in columns if c not in COLUMNS and c != "name"]
    if unknown:
        raise ConvlensError(f"unknown column {', '.join(map(repr, unknown))}: choose from "
                            f"{', '.join(COLUMNS)} (name is always shown)")
    return tuple(dict.fromkeys(c for c in columns if c != "name"))


def _console() -> Console:
    """stdout; at least 160 columns when it is not a terminal (files and pipes would wrap)."""
    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 160))


def render_table(report: Report, depth: int | None = DEFAULT_DEPTH, console: Console | None = None,
                 columns: Sequence[str] = DEFAULT_COLUMNS) -> None:
    """Print the report; ``depth`` limits rows to modules at most that deep (None: all); ``columns``
    chooses the columns after the name (:data:`COLUMNS`), dropped in :data:`DROP_ORDER` where the
    console is too narrow (a line then names them)."""
    console = console or _console()
    columns = check_columns(columns)
    shown = [layer for layer in report if depth is None or layer.depth <= depth]
    names = [("  " * layer.depth + (layer.name or "(model)"),
              layer.aligned is False or any(rf is None for rf in layer.rf) and not _ungridded(layer))
             for layer in shown]
    cells = {c: [COLUMNS[c].cell(layer) for layer in shown] for c in columns}
    dropped: list[str] = []
    table = _table(report, names, cells, columns)
    for c in DROP_ORDER:
        if _natural_width(console, table) <= console.width:
            break
        if c in columns and len(columns) > 1:
            columns = tuple(x for x in columns if x != c)
            dropped.append(c)
            table = _table(report, names, cells, columns)
    console.print(table)
    if any(flag for _, flag in names):
        console.print(LEGEND)
    if dropped:
        console.print(f"left out to fit {console.width} columns: {', '.join(dropped)} (a wider terminal shows them)")
    t = report.totals
    console.print(f"rows shown: {len(shown)} of {len(report)} (depth <= {depth})" if depth is not None
                  else f"rows: {len(report)}")
    console.print(f"total: {totals_text(t)}")
    for line in summary_lines(report):
        console.print(Text(line))
    for note in report.notes:
        console.print(Text(f"note: {note}"))
    if report.diagnostics:
        console.print(f"diagnostics ({len(report.diagnostics)}):")
        for d in report.diagnostics[:MAX_DIAGNOSTICS]:
            console.print(Text(f"  {d.row or '(model)'}: {d.message}"))
        if len(report.diagnostics) > MAX_DIAGNOSTICS:
            console.print(f"  ... and {len(report.diagnostics) - MAX_DIAGNOSTICS} more (JSON holds them all)")


def _natural_width(console: Console, table: Table) -> int:
    """The table's width with room for every cell (rich would otherwise squeeze it into the console)."""
    return console.measure(table, options=console.options.update_width(1 << 20)).maximum


def _table(report: Report, names: list[tuple[str, bool]], cells: dict[str, list[str]],
           columns: Sequence[str]) -> Table:
    given = (", ".join(i.describe() + (" (grid)" if i.grid else "") for i in report.inputs)
             if len(report.inputs) > 1 else "x".join(map(str, report.input_shape)))
    title = Text(f"{report.model} on {given}")  # names are text, not markup
    table = Table(title=title, title_justify="left", header_style="bold")
    longest = max((len(n) + 2 for n, _ in names), default=4)
    table.add_column("name", min_width=min(longest, NAME_WIDTH), overflow="fold")
    for c in columns:
        column = COLUMNS[c]
        width = max([len(column.header)] + [len(x) for x in cells[c]])  # (never narrower: numbers stay whole)
        table.add_column(column.header, justify="right" if column.numeric else "left", no_wrap=True,
                         min_width=width)
    for i, (name, flag) in enumerate(names):
        table.add_row(Text(name + (f" {FLAG}" if flag else "")), *(Text(cells[c][i]) for c in columns))
    return table


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
