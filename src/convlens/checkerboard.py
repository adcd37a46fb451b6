"""Checkerboard: how many paths reach each output phase of an upsampled map (Odena et al. 2016).

After a transposed conv (or any chain with a fractional effective stride) the output positions
fall into phases that repeat with the axis's period. The *overlap count* of a unit is the number of
paths from input pixels to it (the sum of its coverage map: the value an all-ones input gives
through all-ones kernels); when phases get different counts, the output shows the period's pattern.
Counts are taken for interior units (away from the borders), per axis (paths along that axis alone)
and over the grid of all axes' phases.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConvlensError
from .geometry import Local

MAX_GRID = 256  # phase combinations counted over all axes at once

FIX = ("use taps that cover every phase evenly (with dilation 1: a kernel size divisible by the stride, "
       "e.g. 4 for stride 2) or resize, then convolve")


@dataclass
class Checkerboard:
    """Overlap counts of one row's interior units over one period per axis.

    ``start``: the first unit counted (phase 0 is ``start[a] % period[a]``); ``per_axis[a][j]``: paths
    along axis a alone to unit ``start[a] + j``; ``grid``: paths over all axes for every phase
    combination (None when there are more than ``MAX_GRID``); ``ratio`` = max / min of the grid (or of
    the product of the per-axis counts), ``inf`` when some phase is reached by nothing.
    """

    layer: str
    period: tuple[int, ...]
    start: tuple[int, ...]
    per_axis: tuple[tuple[int, ...], ...]
    grid: np.ndarray | None
    ratio: float

    @property
    def even(self) -> bool:
        return self.ratio == 1.0

    @property
    def fix(self) -> str | None:
        return None if self.even else FIX

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "period": list(self.period), "start": list(self.start),
                "per_axis": [list(c) for c in self.per_axis],
                "grid": None if self.grid is None else self.grid.tolist(), "ratio": self.ratio, "even": self.even,
                "fix": self.fix}


def _ratio(values: np.ndarray) -> float:
    lo, hi = float(values.min()), float(values.max())
    return float("inf") if lo == 0 else hi / lo


def checkerboard(report, name: str) -> Checkerboard:
    """Overlap counts per output phase of row ``name`` (see the module doc)."""
    layer = report[name]
    if not all(isinstance(s, Local) for s in layer.axes):
        raise ConvlensError(f"{repr(name) if name else 'the output'} is not local along every axis: no phases to "
                            f"count")
    period = tuple(s.period for s in layer.axes)
    centre = [s.n // 2 for s in layer.axes]
    start = []
    per_axis = []
    for a, state in enumerate(layer.axes):
        p = state.period
        if 2 * p > state.n:
            raise ConvlensError(f"{name!r} has {state.n} positions along axis {a}, fewer than two periods ({p}): "
                                f"use a larger input")
        s0 = max(0, min(state.n - 2 * p, state.n // 2 - p))
        start.append(s0)
        counts = []
        for j in range(2 * p):
            unit = list(centre)
            unit[a] = s0 + j
            counts.append(_total(report.coverage(name, tuple(unit), axes=[a]).counts))
        if counts[:p] != counts[p:]:
            raise ConvlensError(f"{name!r}: the units near the centre of axis {a} still feel the borders (counts "
                                f"{counts} do not repeat every {p}); use a larger input")
        per_axis.append(tuple(counts[:p]))
    grid = None
    if int(np.prod(period)) <= MAX_GRID:
        grid = np.zeros(period, dtype=np.float64)
        for phase in itertools.product(*(range(p) for p in period)):
            unit = tuple(s + j for s, j in zip(start, phase))
            grid[phase] = _total(report.coverage(name, unit).counts)
        if np.all(grid == np.rint(grid)) and grid.max() < 2**53:
            grid = grid.astype(np.int64)
        ratio = _ratio(grid)
    else:
        ratio = float(np.prod([_ratio(np.asarray(c, dtype=np.float64)) for c in per_axis]))
    return Checkerboard(name, period, tuple(start), tuple(per_axis), grid, ratio)


def _total(counts: np.ndarray) -> int | float:
    """Sum of a coverage map: an exact int while int64 holds it."""
    if counts.dtype == np.int64 and float(counts.sum(dtype=np.float64)) < 2**62:
        return int(counts.sum())
    return float(counts.sum(dtype=np.float64))
