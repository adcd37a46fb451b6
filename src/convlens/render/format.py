"""Numbers as every renderer prints them: per-axis values, counts, byte sizes, strides."""

from __future__ import annotations

from fractions import Fraction
from typing import Iterable

from ..report import Layer


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
