"""Numbers as every renderer prints them: per-axis values, counts, byte sizes, strides."""

from __future__ import annotations

from fractions import Fraction
from typing import Iterable

from ..report import Layer, Report, Totals


def axes_text(values: Iterable, sep: str = "×") -> str:
    """Per-axis values joined by ``sep``: None as '?', fractions as 'p/q' (whole ones as 'p')."""
    def one(v) -> str:
        if v is None:
            return "?"
        if isinstance(v, Fraction):
            return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"
        return str(v)
    return sep.join(one(v) for v in values)


def count_text(n: int) -> str:
    """1234567 -> '1.23M' (K, M, G, T: powers of 1000)."""
    for unit, size in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def bytes_text(n: int) -> str:
    """1536 -> '1.5 KiB' (KiB, MiB, GiB: powers of 1024)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def stride_text(layer: Layer) -> str:
    """A row's effective stride per axis, 'global' where the axis is global."""
    return axes_text(["global" if rf == "global" else s for rf, s in zip(layer.rf, layer.stride)])


def totals_text(t: Totals) -> str:
    """'params 11.69M, MACs 1.82G, ...'; past a data-dependent stop, the cost before it, said so."""
    if t.before_stop is None:
        return (f"params {count_text(t.params)}, MACs {count_text(t.macs)}, FLOPs {count_text(t.flops)}, "
                f"bias FLOPs {count_text(t.bias_flops)}, peak activations {bytes_text(t.peak_activation_bytes)}")
    b = t.before_stop
    return (f"params {count_text(t.params)}; MACs, FLOPs and peak activations depend on the data past the stop; "
            f"before it: MACs {count_text(b.macs)}, FLOPs {count_text(b.flops)}, bias FLOPs {count_text(b.bias_flops)}, "
            f"peak activations {bytes_text(b.peak_activation_bytes)}")


def summary_lines(report: Report) -> list[str]:
    """The output's rf, stride and offset; where an axis is global (a classifier), also those of the
    last row that is local along every axis (the last stage before the pooling), the shallowest row
    of that tensor. Past a data-dependent stop that cut the model's call short: that it did."""
    if report.stopped is not None:
        return [f"output: depends on the data (the analysis stopped at {report.stopped.op})"]
    out = report.output
    lines = ["output: global along every axis (each unit sees the whole input)" if out.rf and all(
        rf == "global" for rf in out.rf) else
             f"output: rf {axes_text(out.rf)}, stride {stride_text(out)}, offset {_offset_text(out)}"]
    if any(rf == "global" for rf in out.rf):
        local = [layer for layer in report if layer.axes and all(isinstance(rf, int) for rf in layer.rf)]
        if local:
            last = min((layer for layer in report if layer.tensor == local[-1].tensor), key=lambda x: x.depth)
            lines.append(f"last local row, {last.name or '(model)'}: rf {axes_text(last.rf)}, stride "
                         f"{stride_text(last)}, offset {_offset_text(last)}")
    return lines


def _offset_text(layer) -> str:
    return axes_text(["global" if rf == "global" else o for rf, o in zip(layer.rf, layer.offset)])
